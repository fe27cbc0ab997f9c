package app

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/evotodo/evo/app/auth"
	"github.com/evotodo/evo/store"
	"github.com/evotodo/evo/store/postgres"
	"github.com/evotodo/evo/store/sqlite"
	"github.com/evotodo/evo/store/storetest"
)

// authGet sends method path with the Authorization header authz (none if
// ""), and returns the status, headers and body.
func authGet(t testing.TB, ts *testServer, method, path, authz string, body string) (int, http.Header, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, ts.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, data
}

// wantAuthFailure checks a 401 (or 503) JSON error whose detail contains
// detail and echoes no part of token (no segment of 12 characters or more).
func wantAuthFailure(t testing.TB, status int, header http.Header, data []byte, wantStatus int, detail, token string) {
	t.Helper()
	// Errorf, not Fatalf: this runs on goroutines of the test too.
	if status != wantStatus {
		t.Errorf("status: got %d %s, want %d", status, data, wantStatus)
		return
	}
	if ct := header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type: got %q, want application/json", ct)
	}
	var body ErrorBody
	if err := json.Unmarshal(data, &body); err != nil {
		t.Errorf("body: got %s, want JSON: %v", data, err)
		return
	}
	wantCode := map[int]string{401: store.CodeUnauthorized, 503: store.CodeUnavailable}[wantStatus]
	if body.Code != wantCode || !strings.Contains(body.Detail, detail) {
		t.Errorf("body: got %s, want code %q and a detail with %q", data, wantCode, detail)
	}
	for _, part := range strings.Split(token, ".") {
		if len(part) >= 12 && strings.Contains(string(data), part) {
			t.Errorf("body %s echoes the token", data)
		}
	}
	if wantStatus == 401 && !strings.HasPrefix(header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("WWW-Authenticate: got %q, want a Bearer challenge", header.Get("WWW-Authenticate"))
	}
}

// baClaims are the claims Better Auth puts in a token for u.
func (ts *testServer) baClaims(u store.User) map[string]any {
	now := time.Now()
	return map[string]any{
		"id": u.ID, "name": u.Name, "email": u.Email, "emailVerified": u.EmailVerified, "image": u.Image,
		"createdAt": u.CreatedAt.Format(time.RFC3339Nano), "updatedAt": u.UpdatedAt.Format(time.RFC3339Nano),
		"sub": u.ID, "iat": now.Unix(), "exp": now.Add(15 * time.Minute).Unix(), "iss": ts.JWKS.URL, "aud": ts.JWKS.URL,
	}
}

// with returns a copy of claims with changes applied; a nil value deletes.
func with(claims map[string]any, changes map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range claims {
		out[k] = v
	}
	for k, v := range changes {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

// signedBy signs claims with the issuer's key (EdDSA and its kid).
func signedBy(t testing.TB, ts *testServer, claims map[string]any) string {
	t.Helper()
	tok, err := ts.JWKS.Issuer.Sign(claims)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// testKey is a signing key of the test's own. The private JWK has no kid
// (jws.Sign would put it in the header, over the one the test chose); the
// JWKS entry has kid.
type testKey struct {
	priv jwk.Key
	kid  string
	alg  jwa.SignatureAlgorithm
}

func newTestKey(t testing.TB, alg jwa.SignatureAlgorithm, kid string) testKey {
	t.Helper()
	var raw any
	var err error
	switch alg {
	case jwa.EdDSA:
		_, raw, err = ed25519.GenerateKey(rand.Reader)
	case jwa.RS256, jwa.PS256:
		raw, err = rsa.GenerateKey(rand.Reader, 2048)
	case jwa.ES256:
		raw, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jwa.ES384:
		raw, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	k, err := jwk.FromRaw(raw)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{priv: k, kid: kid, alg: alg}
}

// public returns the key's JWKS entry; without alg if noAlg.
func (k testKey) public(t testing.TB, noAlg bool) json.RawMessage {
	t.Helper()
	pub, err := k.priv.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	pub.Set(jwk.KeyIDKey, k.kid)
	if !noAlg {
		pub.Set(jwk.AlgorithmKey, k.alg)
	}
	data, err := json.Marshal(pub)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// sign signs claims with k, alg and kid in the protected header.
func (k testKey) sign(t testing.TB, alg jwa.SignatureAlgorithm, kid string, claims map[string]any) string {
	t.Helper()
	payload, _ := json.Marshal(claims)
	hdr := jws.NewHeaders()
	hdr.Set(jws.KeyIDKey, kid)
	tok, err := jws.Sign(payload, jws.WithKey(alg, k.priv, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(tok)
}

// serveJWKS makes ts.JWKS serve exactly these entries.
func serveJWKS(t testing.TB, ts *testServer, entries ...json.RawMessage) {
	t.Helper()
	data, err := json.Marshal(map[string]any{"keys": entries})
	if err != nil {
		t.Fatal(err)
	}
	ts.JWKS.body.Store(&data)
}

// issuerEntry is the JWKS entry of ts.JWKS.Issuer's key.
func issuerEntry(t testing.TB, ts *testServer) json.RawMessage {
	t.Helper()
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(ts.JWKS.Issuer.JWKS(), &set); err != nil || len(set.Keys) != 1 {
		t.Fatalf("issuer JWKS: %v", err)
	}
	return set.Keys[0]
}

func b64(data []byte) string { return base64.RawURLEncoding.EncodeToString(data) }

func b64JSON(v any) string {
	data, _ := json.Marshal(v)
	return b64(data)
}

// hs256 signs header and claims with HMAC-SHA256 under secret.
func hs256(header, claims map[string]any, secret []byte) string {
	input := b64JSON(header) + "." + b64JSON(claims)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(input))
	return input + "." + b64(mac.Sum(nil))
}

// deleteUserRow deletes the user row behind the store's back, as Better
// Auth would.
func deleteUserRow(t testing.TB, ts *testServer, id string) {
	t.Helper()
	ctx := context.Background()
	db := ts.srv.db
	if b, ok := db.(*boundedDB); ok {
		db = b.Unwrap()
	}
	switch db := db.(type) {
	case *postgres.DB:
		if _, err := db.Pool().Exec(ctx, `DELETE FROM "user" WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
	case *sqlite.DB:
		conn, err := sql.Open("sqlite", "file:"+filepath.Join(ts.srv.cfg.DataDir, "evo.db")+"?_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.ExecContext(ctx, `DELETE FROM "user" WHERE id = ?`, id); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("unknown store %T", db)
	}
}

// TestAuthAttackMatrix sends forged, broken and misaddressed credentials to
// GET /api/todos: each is a 401 naming the failed check, never echoing the
// token; the few valid variants are 200.
func TestAuthAttackMatrix(t *testing.T) {
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			ts := startServer(t, b, nil)
			u, good := ts.user(t)
			base := ts.baClaims(u)
			kid := ts.JWKS.Issuer.KeyID()
			now := time.Now()
			parts := strings.Split(good, ".")
			var jwks struct {
				Keys []struct {
					X string `json:"x"`
				} `json:"keys"`
			}
			if err := json.Unmarshal(ts.JWKS.Issuer.JWKS(), &jwks); err != nil {
				t.Fatal(err)
			}
			rawPub, _ := base64.RawURLEncoding.DecodeString(jwks.Keys[0].X)
			foreignSameKid := newTestKey(t, jwa.EdDSA, kid)
			foreignOtherKid := newTestKey(t, jwa.EdDSA, "not-in-the-jwks")
			other, _ := ts.user(t)
			deleted, deletedTok := ts.user(t)
			if status, _, data := authGet(t, ts, "GET", "/api/todos", "Bearer "+deletedTok, ""); status != 200 {
				t.Fatalf("before the delete: got %d %s", status, data)
			}
			deleteUserRow(t, ts, deleted.ID)
			time.Sleep(auth.UserCacheTTL) // a deleted user is refused within it
			oversized := strings.Repeat("A", 4500) + "." + strings.Repeat("B", 4500) + ".C"

			tests := []struct {
				name   string
				authz  string // the Authorization header; "" sends none
				status int
				detail string
			}{
				{"OK", "Bearer " + good, 200, ""},
				{"OKLowercaseScheme", "bearer " + good, 200, ""},
				{"OKUppercaseScheme", "BEARER " + good, 200, ""},
				{"OKExpiredWithinLeeway", "Bearer " + signedBy(t, ts, with(base, map[string]any{"exp": now.Add(-10 * time.Second).Unix()})), 200, ""},
				{"OKNotBeforeWithinLeeway", "Bearer " + signedBy(t, ts, with(base, map[string]any{"nbf": now.Add(10 * time.Second).Unix()})), 200, ""},
				{"OKAudienceArray", "Bearer " + signedBy(t, ts, with(base, map[string]any{"aud": []string{"https://other.example", ts.JWKS.URL}})), 200, ""},

				{"AlgNone", "Bearer " + b64JSON(map[string]any{"alg": "none", "kid": kid}) + "." + b64JSON(base) + ".", 401, `unsupported signing algorithm "none"`},
				{"AlgNoneNoKid", "Bearer " + b64JSON(map[string]any{"alg": "none", "typ": "JWT"}) + "." + b64JSON(base) + ".", 401, `unsupported signing algorithm "none"`},
				{"HS256WithRawPublicKey", "Bearer " + hs256(map[string]any{"alg": "HS256", "kid": kid}, base, rawPub), 401, `unsupported signing algorithm "HS256"`},
				{"HS256WithJWKSBody", "Bearer " + hs256(map[string]any{"alg": "HS256", "kid": kid}, base, ts.JWKS.Issuer.JWKS()), 401, `unsupported signing algorithm "HS256"`},
				{"HS256WithPublicJWK", "Bearer " + hs256(map[string]any{"alg": "HS256", "kid": kid}, base, issuerEntry(t, ts)), 401, `unsupported signing algorithm "HS256"`},
				{"ForeignKeySameKid", "Bearer " + foreignSameKid.sign(t, jwa.EdDSA, kid, base), 401, "invalid token signature"},
				{"ForeignKeyOtherKid", "Bearer " + foreignOtherKid.sign(t, jwa.EdDSA, "not-in-the-jwks", base), 401, "token signing key not found in JWKS"},
				{"TamperedPayload", "Bearer " + parts[0] + "." + b64JSON(with(base, map[string]any{"sub": other.ID})) + "." + parts[2], 401, "invalid token signature"},
				{"TamperedHeaderTyp", "Bearer " + b64JSON(map[string]any{"alg": "EdDSA", "kid": kid, "typ": "JWT"}) + "." + parts[1] + "." + parts[2], 401, "invalid token signature"},
				{"TamperedHeaderAlg", "Bearer " + b64JSON(map[string]any{"alg": "ES256", "kid": kid}) + "." + parts[1] + "." + parts[2], 401, `signing algorithm "ES256" does not match the signing key`},
				{"TamperedSignature", "Bearer " + parts[0] + "." + parts[1] + "." + b64(make([]byte, 64)), 401, "invalid token signature"},
				{"Expired", "Bearer " + signedBy(t, ts, with(base, map[string]any{"exp": now.Add(-time.Minute).Unix()})), 401, "token has expired"},
				{"NotYetValid", "Bearer " + signedBy(t, ts, with(base, map[string]any{"nbf": now.Add(2 * time.Minute).Unix()})), 401, "token is not yet valid"},
				{"WrongIssuer", "Bearer " + signedBy(t, ts, with(base, map[string]any{"iss": "https://evil.example"})), 401, `invalid token issuer: got iss "https://evil.example", want "` + ts.JWKS.URL + `"; iss and aud must be BETTER_AUTH_URL`},
				{"LongIssuerQuotedAndCut", "Bearer " + signedBy(t, ts, with(base, map[string]any{"iss": strings.Repeat("\x1b", 300)})), 401,
					`invalid token issuer: got iss "` + strings.Repeat(`\x1b`, 100) + `...", want`},
				{"MissingIssuer", "Bearer " + signedBy(t, ts, with(base, map[string]any{"iss": nil})), 401, `invalid token issuer: got iss "", want`},
				{"WrongAudience", "Bearer " + signedBy(t, ts, with(base, map[string]any{"aud": "https://evil.example"})), 401, `invalid token audience: got aud "https://evil.example", want "` + ts.JWKS.URL + `"; iss and aud must be BETTER_AUTH_URL`},
				{"MissingAudience", "Bearer " + signedBy(t, ts, with(base, map[string]any{"aud": nil})), 401, "invalid token audience"},
				{"MissingSub", "Bearer " + signedBy(t, ts, with(base, map[string]any{"sub": nil})), 401, "token has no subject (sub)"},
				{"MissingExp", "Bearer " + signedBy(t, ts, with(base, map[string]any{"exp": nil})), 401, "token has no expiry (exp)"},
				{"NonexistentUser", "Bearer " + signedBy(t, ts, with(base, map[string]any{"sub": store.NewUserID()})), 401, "token user does not exist"},
				{"DeletedUser", "Bearer " + deletedTok, 401, "token user does not exist"},
				{"EmptyToken", "Bearer ", 401, "missing token"},
				{"SchemeOnly", "Bearer", 401, "missing token"},
				{"GarbledToken", "Bearer %%garbled%%", 401, "malformed token"},
				{"GarbledSegments", "Bearer abc.def.ghi", 401, "malformed token"},
				{"TwoParts", "Bearer " + parts[0] + "." + parts[1], 401, "malformed token"},
				{"NoHeader", "", 401, "missing Authorization header"},
				{"NoScheme", good, 401, `Authorization header must be "Bearer <token>"`},
				{"TokenScheme", "Token " + good, 401, `Authorization header must be "Bearer <token>"`},
				{"BasicScheme", "Basic dXNlcjpwYXNz", 401, `Authorization header must be "Bearer <token>"`},
				{"BearerNoSpace", "Bearer" + good, 401, `Authorization header must be "Bearer <token>"`},
				{"Bearerx", "Bearerx " + good, 401, `Authorization header must be "Bearer <token>"`},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					status, header, data := authGet(t, ts, "GET", "/api/todos", tt.authz, "")
					if tt.status == 200 {
						if status != 200 {
							t.Fatalf("got %d %s, want 200", status, data)
						}
						return
					}
					token := strings.TrimSpace(strings.TrimPrefix(tt.authz, "Bearer"))
					wantAuthFailure(t, status, header, data, tt.status, tt.detail, token)
				})
			}
			t.Run("NoHeaderChallengeHasNoErrorCode", func(t *testing.T) {
				_, header, _ := authGet(t, ts, "GET", "/api/todos", "", "")
				if got := header.Get("WWW-Authenticate"); got != "Bearer" {
					t.Errorf("got %q, want Bearer without an error (RFC 6750 3.1)", got)
				}
				_, header, _ = authGet(t, ts, "GET", "/api/todos", "Bearer x.y.z", "")
				if got := header.Get("WWW-Authenticate"); got != `Bearer error="invalid_token"` {
					t.Errorf("got %q, want an invalid_token challenge", got)
				}
			})
			t.Run("OversizedToken", func(t *testing.T) {
				// The server reads headers up to 16 KiB, so the verifier's own
				// 8 KiB limit is what refuses this token.
				status, header, data := authGet(t, ts, "GET", "/api/todos", "Bearer "+oversized, "")
				wantAuthFailure(t, status, header, data, 401, "longer than 8192 bytes", oversized)
			})
			t.Run("OtherUsersTodoIsNotFound", func(t *testing.T) {
				owner, ownerTok := ts.user(t)
				_, ownerBody := ts.do(t, "POST", "/api/todos", ownerTok, map[string]string{"title": "B's"})
				td := decode[store.Todo](t, ownerBody)
				for _, r := range []struct{ method, body string }{
					{"GET", ""}, {"PUT", `{"title":"mine now"}`}, {"PATCH", `{"is_complete":true}`}, {"DELETE", ""},
				} {
					status, _, data := authGet(t, ts, r.method, "/api/todos/"+td.ID, "Bearer "+good, r.body)
					if status != 404 || decode[ErrorBody](t, data).Code != store.CodeNotFound {
						t.Errorf("%s B's todo with A's token: got %d %s, want 404", r.method, status, data)
					}
				}
				// A body naming B is ignored: the todo is A's.
				status, _, data := authGet(t, ts, "POST", "/api/todos", "Bearer "+good, `{"title":"x","user_id":"`+owner.ID+`"}`)
				if got := decode[store.Todo](t, data); status != 201 || got.UserID != u.ID {
					t.Errorf("POST with B's user_id: got %d %s, want 201 owned by A", status, data)
				}
				_, data = ts.do(t, "GET", "/api/todos/"+td.ID, ownerTok, nil)
				if got := decode[store.Todo](t, data); got.Title != "B's" || got.IsComplete {
					t.Errorf("B's todo after A's attempts: got %s", data)
				}
				_, data = ts.do(t, "GET", "/api/todos", ownerTok, nil)
				if got := decode[TodoList](t, data); got.Total != 1 {
					t.Errorf("B's list: got %s, want B's one todo", data)
				}
			})
		})
	}
}

// TestAuthJWKSAlgorithms: RS256 and ES256 keys are accepted when the JWKS
// holds them, an Ed25519 key without "alg" (Better Auth before 1.3.8) too;
// other algorithms are not, even when the JWKS lists them.
func TestAuthJWKSAlgorithms(t *testing.T) {
	ts := startServer(t, "sqlite", nil)
	u, _ := ts.user(t)
	claims := ts.baClaims(u)
	rs := newTestKey(t, jwa.RS256, "rsa-1")
	es := newTestKey(t, jwa.ES256, "ec-1")
	rsNoAlg := newTestKey(t, jwa.RS256, "rsa-noalg")
	esNoAlg := newTestKey(t, jwa.ES256, "ec-noalg")
	ps := newTestKey(t, jwa.PS256, "ps-1")
	es384 := newTestKey(t, jwa.ES384, "ec384-1")
	edNoAlg := issuerEntry(t, ts)
	var m map[string]any
	json.Unmarshal(edNoAlg, &m)
	delete(m, "alg")
	edNoAlg, _ = json.Marshal(m)
	serveJWKS(t, ts, edNoAlg, rs.public(t, false), es.public(t, false), rsNoAlg.public(t, true),
		esNoAlg.public(t, true), ps.public(t, false), es384.public(t, false))

	tests := []struct {
		name   string
		token  string
		status int
		detail string
	}{
		{"EdDSAKeyWithoutAlg", signedBy(t, ts, claims), 200, ""},
		{"RS256", rs.sign(t, jwa.RS256, "rsa-1", claims), 200, ""},
		{"ES256", es.sign(t, jwa.ES256, "ec-1", claims), 200, ""},
		{"RS256KeyWithoutAlg", rsNoAlg.sign(t, jwa.RS256, "rsa-noalg", claims), 200, ""},
		{"ES256KeyWithoutAlg", esNoAlg.sign(t, jwa.ES256, "ec-noalg", claims), 200, ""},
		{"PS256", ps.sign(t, jwa.PS256, "ps-1", claims), 401, `unsupported signing algorithm "PS256"`},
		{"ES384", es384.sign(t, jwa.ES384, "ec384-1", claims), 401, `unsupported signing algorithm "ES384"`},
		{"RS512WithRS256Key", rs.sign(t, jwa.RS512, "rsa-1", claims), 401, `unsupported signing algorithm "RS512"`},
		{"RS256TokenNamingTheES256Key", rs.sign(t, jwa.RS256, "ec-1", claims), 401, `signing algorithm "RS256" does not match the signing key`},
		{"ES256TokenNamingTheEdDSAKey", es.sign(t, jwa.ES256, ts.JWKS.Issuer.KeyID(), claims), 401, `signing algorithm "ES256" does not match the signing key`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, header, data := authGet(t, ts, "GET", "/api/todos", "Bearer "+tt.token, "")
			if tt.status == 200 {
				if status != 200 {
					t.Fatalf("got %d %s, want 200", status, data)
				}
				return
			}
			wantAuthFailure(t, status, header, data, tt.status, tt.detail, tt.token)
		})
	}
}

// TestAuthJWKSDownAtFirstUse: no key set and the issuer answers 502: a
// quick 503 (JSON), then it works once the issuer is back.
func TestAuthJWKSDownAtFirstUse(t *testing.T) {
	ts := startServer(t, "sqlite", nil)
	_, tok := ts.user(t)
	ts.JWKS.down.Store(true)
	start := time.Now()
	status, header, data := authGet(t, ts, "GET", "/api/todos", "Bearer "+tok, "")
	took := time.Since(start)
	wantAuthFailure(t, status, header, data, 503, "authentication service unavailable", tok)
	if took > time.Second {
		t.Errorf("503 took %v, want well under the 10s fetch timeout", took)
	}
	t.Logf("503 after %v", took)
	// Right after a failure: 503 at once, without another fetch.
	status, _, _ = authGet(t, ts, "GET", "/api/todos", "Bearer "+tok, "")
	if status != 503 || ts.JWKS.fetches.Load() != 1 {
		t.Errorf("second request: got %d after %d fetches, want 503 after 1", status, ts.JWKS.fetches.Load())
	}
	ts.JWKS.down.Store(false)
	time.Sleep(1100 * time.Millisecond)
	if status, _, data := authGet(t, ts, "GET", "/api/todos", "Bearer "+tok, ""); status != 200 {
		t.Errorf("issuer back: got %d %s, want 200", status, data)
	}
	if got := ts.JWKS.fetches.Load(); got != 2 {
		t.Errorf("got %d fetches, want 2", got)
	}
}

// TestAuthJWKSHangsAtFirstUse: an issuer that accepts the connection and
// never answers costs a request at most REQUEST_TIMEOUT (or the 10s fetch
// timeout, whichever is first), then 503.
func TestAuthJWKSHangsAtFirstUse(t *testing.T) {
	stop := make(chan struct{})
	var fetches atomic.Int64
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	t.Cleanup(func() { close(stop); hang.Close() })
	ts := startServer(t, "sqlite", map[string]string{"BETTER_AUTH_URL": hang.URL, "REQUEST_TIMEOUT": "1s"})
	u, _ := ts.user(t)
	claims := with(ts.baClaims(u), map[string]any{"iss": hang.URL, "aud": hang.URL})
	tok := signedBy(t, ts, claims)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			start := time.Now()
			status, header, data := authGet(t, ts, "GET", "/api/todos", "Bearer "+tok, "")
			wantAuthFailure(t, status, header, data, 503, "timed out waiting for the signing keys", tok)
			if took := time.Since(start); took < 900*time.Millisecond || took > 3*time.Second {
				t.Errorf("503 after %v, want after REQUEST_TIMEOUT (1s)", took)
			}
		})
	}
	wg.Wait()
	if got := fetches.Load(); got != 1 {
		t.Errorf("got %d fetches, want 1 shared by the 4 requests", got)
	}
}

// TestAuthJWKSDownWarmCache: with a key set fetched once, the issuer going
// down changes nothing, even after the cache lifespan; when it is back the
// set is refreshed in the background.
func TestAuthJWKSDownWarmCache(t *testing.T) {
	ts := startServer(t, "sqlite", map[string]string{"JWKS_CACHE_LIFESPAN": "1", "JWKS_REFRESH_INTERVAL": "300ms"})
	_, tok := ts.user(t)
	if status, _, data := authGet(t, ts, "GET", "/api/todos", "Bearer "+tok, ""); status != 200 {
		t.Fatalf("warm-up: got %d %s", status, data)
	}
	ts.JWKS.down.Store(true)
	time.Sleep(1100 * time.Millisecond) // past the lifespan
	for i := range 10 {
		start := time.Now()
		if status, _, data := authGet(t, ts, "GET", "/api/todos", "Bearer "+tok, ""); status != 200 {
			t.Fatalf("request %d with the issuer down: got %d %s, want 200 (stale keys)", i, status, data)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("request %d took %v", i, took)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// ~0.6s of requests: the failed fetch, then at most one retry per 300ms.
	if got := ts.JWKS.fetches.Load(); got < 2 || got > 5 {
		t.Errorf("got %d fetches while down, want 2..5", got)
	}
	ts.JWKS.down.Store(false)
	before := ts.JWKS.fetches.Load()
	time.Sleep(350 * time.Millisecond)
	deadline := time.Now().Add(3 * time.Second)
	for ts.JWKS.fetches.Load() == before && time.Now().Before(deadline) {
		authGet(t, ts, "GET", "/api/todos", "Bearer "+tok, "") // starts the background fetch
		time.Sleep(20 * time.Millisecond)
	}
	if ts.JWKS.fetches.Load() == before {
		t.Fatal("no fetch after the issuer came back")
	}
	time.Sleep(100 * time.Millisecond)
	after := ts.JWKS.fetches.Load()
	for range 5 {
		authGet(t, ts, "GET", "/api/todos", "Bearer "+tok, "")
	}
	if got := ts.JWKS.fetches.Load(); got != after {
		t.Errorf("fresh set again: got %d fetches, want %d", got, after)
	}
}

// TestAuthJWKSKeyRotation: a new kid works after one refetch; tokens of the
// old key keep working until the key leaves the JWKS and the cache lifespan
// passes, then 401.
func TestAuthJWKSKeyRotation(t *testing.T) {
	ts := startServer(t, "sqlite", map[string]string{"JWKS_CACHE_LIFESPAN": "2", "JWKS_REFRESH_INTERVAL": "1h"})
	u, oldTok := ts.user(t)
	get := func(tok string) (int, http.Header, []byte) {
		return authGet(t, ts, "GET", "/api/todos", "Bearer "+tok, "")
	}
	if status, _, data := get(oldTok); status != 200 {
		t.Fatalf("old key: got %d %s", status, data)
	}
	next := newTestKey(t, jwa.EdDSA, "next-key")
	newTok := next.sign(t, jwa.EdDSA, "next-key", ts.baClaims(u))
	serveJWKS(t, ts, issuerEntry(t, ts), next.public(t, false))
	rotated := time.Now()
	if status, _, data := get(newTok); status != 200 {
		t.Fatalf("new key after rotation: got %d %s", status, data)
	}
	if got := ts.JWKS.fetches.Load(); got != 2 {
		t.Errorf("after the new kid: got %d fetches, want 2 (one refetch)", got)
	}
	for _, tok := range []string{oldTok, newTok, newTok} {
		if status, _, data := get(tok); status != 200 {
			t.Errorf("both keys listed: got %d %s", status, data)
		}
	}
	// The old key leaves the JWKS; the cached set still has it.
	serveJWKS(t, ts, next.public(t, false))
	if time.Since(rotated) < 1500*time.Millisecond {
		if status, _, data := get(oldTok); status != 200 {
			t.Errorf("old key removed, cache still fresh: got %d %s, want 200", status, data)
		}
	}
	time.Sleep(time.Until(rotated.Add(2500 * time.Millisecond)))
	status, header, data := get(oldTok)
	wantAuthFailure(t, status, header, data, 401, "token signing key not found in JWKS", oldTok)
	if status, _, data := get(newTok); status != 200 {
		t.Errorf("new key after the old one left: got %d %s", status, data)
	}
	if got := ts.JWKS.fetches.Load(); got != 3 {
		t.Errorf("got %d fetches, want 3 (first use, new kid, lifespan)", got)
	}
}

// TestAuthJWKSFetchCounts counts the issuer's fetches.
func TestAuthJWKSFetchCounts(t *testing.T) {
	t.Run("ConcurrentFirstRequestsShareOneFetch", func(t *testing.T) {
		ts := startServer(t, "sqlite", nil)
		_, tok := ts.user(t)
		var wg sync.WaitGroup
		for range 32 {
			wg.Go(func() {
				if status, _, data := authGet(t, ts, "GET", "/api/todos", "Bearer "+tok, ""); status != 200 {
					t.Errorf("got %d %s", status, data)
				}
			})
		}
		wg.Wait()
		if got := ts.JWKS.fetches.Load(); got != 1 {
			t.Errorf("32 concurrent first requests: got %d fetches, want 1", got)
		}
	})
	flood := func(t *testing.T, ts *testServer, u store.User, d time.Duration) (requests int) {
		key := newTestKey(t, jwa.EdDSA, "x")
		claims := ts.baClaims(u)
		var n atomic.Int64
		var wg sync.WaitGroup
		end := time.Now().Add(d)
		for range 4 {
			wg.Go(func() {
				for time.Now().Before(end) {
					kid := strings.ToLower(rand.Text())
					tok := key.sign(t, jwa.EdDSA, kid, claims)
					status, header, data := authGet(t, ts, "GET", "/api/todos", "Bearer "+tok, "")
					wantAuthFailure(t, status, header, data, 401, "token signing key not found in JWKS", tok)
					n.Add(1)
				}
			})
		}
		wg.Wait()
		return int(n.Load())
	}
	t.Run("UnknownKidFloodOneRefetch", func(t *testing.T) {
		ts := startServer(t, "sqlite", map[string]string{"JWKS_REFRESH_INTERVAL": "1h"})
		u, tok := ts.user(t)
		authGet(t, ts, "GET", "/api/todos", "Bearer "+tok, "")
		n := flood(t, ts, u, 500*time.Millisecond)
		if got := ts.JWKS.fetches.Load(); got != 2 {
			t.Errorf("%d random kids: got %d fetches, want 2 (first use + one refetch)", n, got)
		}
		t.Logf("%d random-kid requests, %d fetches", n, ts.JWKS.fetches.Load())
	})
	t.Run("UnknownKidFloodRateLimited", func(t *testing.T) {
		ts := startServer(t, "sqlite", map[string]string{"JWKS_REFRESH_INTERVAL": "250ms"})
		u, tok := ts.user(t)
		authGet(t, ts, "GET", "/api/todos", "Bearer "+tok, "")
		start := time.Now()
		n := flood(t, ts, u, time.Second)
		extra := int(ts.JWKS.fetches.Load()) - 1
		limit := int(time.Since(start)/(250*time.Millisecond)) + 1
		if extra < 1 || extra > limit {
			t.Errorf("%d random kids over %v: got %d refetches, want 1..%d", n, time.Since(start), extra, limit)
		}
		t.Logf("%d random-kid requests over %v, %d refetches", n, time.Since(start), extra)
	})
	t.Run("CacheLifespan", func(t *testing.T) {
		ts := startServer(t, "sqlite", map[string]string{"JWKS_CACHE_LIFESPAN": "1"})
		_, tok := ts.user(t)
		for range 3 {
			authGet(t, ts, "GET", "/api/todos", "Bearer "+tok, "")
		}
		if got := ts.JWKS.fetches.Load(); got != 1 {
			t.Errorf("within the lifespan: got %d fetches, want 1", got)
		}
		time.Sleep(1100 * time.Millisecond)
		if status, _, data := authGet(t, ts, "GET", "/api/todos", "Bearer "+tok, ""); status != 200 {
			t.Errorf("got %d %s", status, data)
		}
		if got := ts.JWKS.fetches.Load(); got != 2 {
			t.Errorf("after the lifespan: got %d fetches, want 2", got)
		}
	})
	t.Run("MaxKeysKeepsTheLastListed", func(t *testing.T) {
		ts := startServer(t, "sqlite", map[string]string{"JWKS_CACHE_MAX_KEYS": "2", "JWKS_REFRESH_INTERVAL": "1h"})
		u, tok := ts.user(t)
		oldest := newTestKey(t, jwa.EdDSA, "oldest")
		older := newTestKey(t, jwa.EdDSA, "older")
		serveJWKS(t, ts, oldest.public(t, false), older.public(t, false), issuerEntry(t, ts))
		if status, _, data := authGet(t, ts, "GET", "/api/todos", "Bearer "+tok, ""); status != 200 {
			t.Errorf("newest key: got %d %s", status, data)
		}
		olderTok := older.sign(t, jwa.EdDSA, "older", ts.baClaims(u))
		if status, _, data := authGet(t, ts, "GET", "/api/todos", "Bearer "+olderTok, ""); status != 200 {
			t.Errorf("second key: got %d %s", status, data)
		}
		oldestTok := oldest.sign(t, jwa.EdDSA, "oldest", ts.baClaims(u))
		status, header, data := authGet(t, ts, "GET", "/api/todos", "Bearer "+oldestTok, "")
		wantAuthFailure(t, status, header, data, 401, "token signing key not found in JWKS", oldestTok)
	})
}

// TestAuthOptional mounts optionalAuth on a route of the test's own.
func TestAuthOptional(t *testing.T) {
	ts := startServerWith(t, "sqlite", func(s *Server) {
		s.app.Get("/test/optional", s.withTimeout, s.optionalAuth, func(c *fiber.Ctx) error {
			id, ok := optionalUserID(c)
			return c.JSON(fiber.Map{"user": id, "authenticated": ok})
		})
	})
	u, tok := ts.user(t)
	expired := signedBy(t, ts, with(ts.baClaims(u), map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}))
	type answer struct {
		User          string `json:"user"`
		Authenticated bool   `json:"authenticated"`
	}

	status, _, data := authGet(t, ts, "GET", "/test/optional", "", "")
	if got := decode[answer](t, data); status != 200 || got.Authenticated || got.User != "" {
		t.Errorf("no header: got %d %s, want 200 anonymous", status, data)
	}
	if got := ts.JWKS.fetches.Load(); got != 0 {
		t.Errorf("no header: got %d JWKS fetches, want 0", got)
	}
	status, _, data = authGet(t, ts, "GET", "/test/optional", "Bearer "+tok, "")
	if got := decode[answer](t, data); status != 200 || !got.Authenticated || got.User != u.ID {
		t.Errorf("valid token: got %d %s, want 200 as %s", status, data, u.ID)
	}
	status, header, data := authGet(t, ts, "GET", "/test/optional", "Bearer "+expired, "")
	wantAuthFailure(t, status, header, data, 401, "token has expired", expired)
	status, header, data = authGet(t, ts, "GET", "/test/optional", "Token "+tok, "")
	wantAuthFailure(t, status, header, data, 401, `must be "Bearer <token>"`, tok)
	status, header, data = authGet(t, ts, "GET", "/test/optional", "Bearer ", "")
	wantAuthFailure(t, status, header, data, 401, "missing token", "")
}

// TestAuthProductionConfig: production needs BETTER_AUTH_URL, and with it
// set the dev issuer's JWKS route does not exist.
func TestAuthProductionConfig(t *testing.T) {
	t.Run("ProductionWithoutBetterAuthURLRefusesToStart", func(t *testing.T) {
		vars := map[string]string{"ENVIRONMENT": "production", "DATA_DIR": t.TempDir()}
		_, err := LoadConfig(func(k string) string { return vars[k] })
		if err == nil || !strings.Contains(err.Error(), "BETTER_AUTH_URL") || !strings.Contains(err.Error(), "production") {
			t.Fatalf("LoadConfig: got %v, want an error naming BETTER_AUTH_URL and production", err)
		}
		err = Run(context.Background(), []string{"serve"}, func(k string) string { return vars[k] }, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "BETTER_AUTH_URL") {
			t.Fatalf("Run serve: got %v, want it to refuse naming BETTER_AUTH_URL", err)
		}
	})
	for _, env := range []string{"test", "production"} {
		t.Run("NoDevJWKSRoute/"+env, func(t *testing.T) {
			ts := startServer(t, "sqlite", map[string]string{"ENVIRONMENT": env})
			if ts.srv.issuer != nil {
				t.Fatal("dev issuer on with BETTER_AUTH_URL set")
			}
			_, tok := ts.user(t)
			if status, _, data := authGet(t, ts, "GET", "/api/auth/jwks", "Bearer "+tok, ""); status != 404 {
				t.Errorf("authenticated: got %d %s, want 404", status, data)
			}
			if status, _, data := authGet(t, ts, "GET", "/api/auth/jwks", "", ""); status != 401 {
				t.Errorf("anonymous: got %d %s, want 401", status, data)
			}
		})
	}
	t.Run("DevIssuerWithoutBetterAuthURL", func(t *testing.T) {
		ts := startServer(t, "sqlite", map[string]string{"BETTER_AUTH_URL": ""})
		if ts.srv.issuer == nil {
			t.Fatal("no dev issuer")
		}
		status, _, data := authGet(t, ts, "GET", "/api/auth/jwks", "", "")
		if status != 200 || !strings.Contains(string(data), ts.srv.issuer.KeyID()) {
			t.Fatalf("dev JWKS: got %d %s", status, data)
		}
		u, err := ts.srv.db.EnsureUser(context.Background(), "dev@example.com", "Dev")
		if err != nil {
			t.Fatal(err)
		}
		tok, err := ts.srv.issuer.Token(u, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if status, _, data := authGet(t, ts, "GET", "/api/todos", "Bearer "+tok, ""); status != 200 {
			t.Errorf("dev token: got %d %s", status, data)
		}
	})
}

// TestAuthDeletedUserEveryReplica: the verifier remembers users that exist for
// auth.UserCacheTTL, so a token whose user row Better Auth deleted is refused by every
// replica within that time; a create on a replica that still trusted the user fails on
// the missing row and is refused as the token would be (401), and that replica forgets
// the user at once.
func TestAuthDeletedUserEveryReplica(t *testing.T) {
	js := newJWKSServer(t)
	env := map[string]string{"DATABASE_URL": storetest.PostgresURL(t)}
	a, b := startReplica(t, js, "postgres", env), startReplica(t, js, "postgres", env)
	u, tok := a.user(t)
	for _, ts := range []*testServer{a, b} {
		if status, body := ts.do(t, "GET", "/api/todos", tok, nil); status != http.StatusOK {
			t.Fatalf("before the delete: %d %s", status, body)
		}
	}
	deleteUserRow(t, a, u.ID)
	deleted := time.Now()
	// A create that still passed the cached check: the row is gone, 401.
	status, body := a.do(t, "POST", "/api/todos", tok, map[string]string{"title": "orphan"})
	if time.Since(deleted) < auth.UserCacheTTL && status != http.StatusUnauthorized {
		t.Fatalf("create for the deleted user: %d %s, want 401", status, body)
	}
	if status, body := a.do(t, "GET", "/api/todos", tok, nil); status != http.StatusUnauthorized {
		t.Fatalf("replica a after the failed create: %d %s, want 401 (user forgotten)", status, body)
	}
	time.Sleep(time.Until(deleted.Add(auth.UserCacheTTL)))
	for i, ts := range []*testServer{a, b} {
		status, body := ts.do(t, "GET", "/api/todos", tok, nil)
		if status != http.StatusUnauthorized || !strings.Contains(string(body), "token user does not exist") {
			t.Fatalf("replica %d, %v after the delete: %d %s, want 401", i, auth.UserCacheTTL, status, body)
		}
	}
}
