package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/evotodo/evo/store"
	"github.com/evotodo/evo/store/storetest"
)

// fakeIssuer is a JWKS endpoint over real HTTP. hang makes it block until
// the request is cancelled or the test ends.
type fakeIssuer struct {
	*httptest.Server
	iss     *Issuer
	fetches atomic.Int64
	hang    atomic.Bool
	down    atomic.Bool
	body    atomic.Pointer[[]byte]
}

func newFakeIssuer(t testing.TB) *fakeIssuer {
	t.Helper()
	fi := &fakeIssuer{}
	stop := make(chan struct{})
	fi.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fi.fetches.Add(1)
		switch {
		case fi.hang.Load():
			select {
			case <-r.Context().Done():
			case <-stop:
			}
			return
		case fi.down.Load():
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		body := fi.iss.JWKS()
		if b := fi.body.Load(); b != nil {
			body = *b
		}
		w.Write(body)
	}))
	t.Cleanup(func() { close(stop); fi.Close() })
	iss, err := NewIssuer(fi.URL)
	if err != nil {
		t.Fatal(err)
	}
	fi.iss = iss
	return fi
}

// verifier returns a verifier of fi's tokens on a real SQLite store, and a
// user with a valid token.
func (fi *fakeIssuer) verifier(t testing.TB, cfg Config) (*Verifier, string) {
	t.Helper()
	db := storetest.SQLite(t)
	cfg.JWKSURL, cfg.Issuer, cfg.Audience = fi.URL+"/api/auth/jwks", fi.URL, fi.URL
	v := NewVerifier(cfg, db, storetest.Quiet())
	tok, err := fi.iss.Token(storetest.User(t, db), 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return v, tok
}

func wantCode(t testing.TB, err error, code, detail string) {
	t.Helper()
	if got := store.ErrorCode(err); got != code || !strings.Contains(store.ErrorMessage(err), detail) {
		t.Fatalf("got %v (code %s), want code %s with %q", err, got, code, detail)
	}
}

func TestVerifierJWKSHangs(t *testing.T) {
	t.Run("FirstUse503AfterFetchTimeout", func(t *testing.T) {
		fi := newFakeIssuer(t)
		v, tok := fi.verifier(t, Config{FetchTimeout: 300 * time.Millisecond})
		fi.hang.Store(true)
		start := time.Now()
		_, err := v.Verify(context.Background(), tok)
		took := time.Since(start)
		wantCode(t, err, store.CodeUnavailable, "cannot fetch the signing keys")
		if took < 250*time.Millisecond || took > 2*time.Second {
			t.Errorf("got 503 after %v, want after the 300ms fetch timeout", took)
		}
		// For retryNoKeys after the failure, 503 without waiting.
		start = time.Now()
		_, err = v.Verify(context.Background(), tok)
		wantCode(t, err, store.CodeUnavailable, "cannot fetch the signing keys")
		if took := time.Since(start); took > 100*time.Millisecond {
			t.Errorf("second request took %v, want an immediate 503", took)
		}
		if got := fi.fetches.Load(); got != 1 {
			t.Errorf("got %d fetches, want 1", got)
		}
	})
	t.Run("RequestDeadlineIs503", func(t *testing.T) {
		fi := newFakeIssuer(t)
		v, tok := fi.verifier(t, Config{})
		fi.hang.Store(true)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := v.Verify(ctx, tok)
		wantCode(t, err, store.CodeUnavailable, "timed out waiting for the signing keys")
	})
	t.Run("WarmCacheServesStaleWithoutWaiting", func(t *testing.T) {
		fi := newFakeIssuer(t)
		v, tok := fi.verifier(t, Config{CacheLifespan: 200 * time.Millisecond, RefreshInterval: time.Hour, FetchTimeout: 300 * time.Millisecond})
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
		fi.hang.Store(true)
		time.Sleep(250 * time.Millisecond)
		// The first request after the lifespan waits for the fetch (the
		// issuer answered last time), then falls back to the stale keys.
		start := time.Now()
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatalf("stale keys: %v", err)
		}
		if took := time.Since(start); took < 250*time.Millisecond {
			t.Errorf("first stale request took %v, want it to wait for the fetch timeout", took)
		}
		// Now the issuer is known to be down: no more waiting.
		for range 5 {
			start := time.Now()
			if _, err := v.Verify(context.Background(), tok); err != nil {
				t.Fatalf("stale keys: %v", err)
			}
			if took := time.Since(start); took > 100*time.Millisecond {
				t.Errorf("stale request took %v, want no wait", took)
			}
		}
		if got := fi.fetches.Load(); got != 2 {
			t.Errorf("got %d fetches, want 2 (RefreshInterval is 1h)", got)
		}
	})
	t.Run("StaleRetriedInBackground", func(t *testing.T) {
		fi := newFakeIssuer(t)
		v, tok := fi.verifier(t, Config{CacheLifespan: time.Hour, RefreshInterval: 100 * time.Millisecond})
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
		// Force staleness and a failure, then bring the issuer back.
		fi.down.Store(true)
		v.mu.Lock()
		v.freshUntil = time.Time{}
		v.mu.Unlock()
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatalf("stale keys: %v", err)
		}
		fi.down.Store(false)
		time.Sleep(150 * time.Millisecond)
		if _, err := v.Verify(context.Background(), tok); err != nil { // starts the background fetch
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Second)
		for {
			v.mu.Lock()
			failing := v.failing
			v.mu.Unlock()
			if !failing {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the background fetch did not recover")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if got := fi.fetches.Load(); got != 3 {
			t.Errorf("got %d fetches, want 3", got)
		}
	})
}

// TestVerifierJWKSRotationConcurrent: many requests with a new kid at once
// all wait for the one refetch instead of 401ing while it is in flight.
func TestVerifierJWKSRotationConcurrent(t *testing.T) {
	fi := newFakeIssuer(t)
	v, tok := fi.verifier(t, Config{RefreshInterval: time.Hour})
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	next, err := NewIssuer(fi.URL)
	if err != nil {
		t.Fatal(err)
	}
	body := joinJWKS(t, fi.iss.JWKS(), next.JWKS())
	fi.body.Store(&body)
	sub := mustSubject(t, tok)
	newTok, err := next.Sign(map[string]any{"sub": sub, "iss": fi.URL, "aud": fi.URL, "exp": time.Now().Add(time.Minute).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			if _, err := v.Verify(context.Background(), newTok); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("new kid: %v", err)
	}
	if got := fi.fetches.Load(); got != 2 {
		t.Errorf("got %d fetches, want 2", got)
	}
}

func TestVerifierJWKSContents(t *testing.T) {
	fi := newFakeIssuer(t)
	v, tok := fi.verifier(t, Config{})
	// A key marked for encryption, a symmetric key and a key without kid
	// are ignored; an Ed25519 key without "alg" is kept.
	var raw struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(fi.iss.JWKS(), &raw); err != nil {
		t.Fatal(err)
	}
	good := raw.Keys[0]
	delete(good, "alg")
	enc := map[string]any{"kty": "OKP", "crv": "Ed25519", "x": good["x"], "kid": "enc", "use": "enc"}
	oct := map[string]any{"kty": "oct", "k": base64.RawURLEncoding.EncodeToString([]byte("secret")), "kid": "oct", "alg": "HS256"}
	nokid := map[string]any{"kty": "OKP", "crv": "Ed25519", "x": good["x"], "alg": "EdDSA"}
	body, _ := json.Marshal(map[string]any{"keys": []any{enc, oct, nokid, good}})
	fi.body.Store(&body)
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("Ed25519 key without alg: %v", err)
	}
	v.mu.Lock()
	n := v.set.Len()
	v.mu.Unlock()
	if n != 1 {
		t.Errorf("got %d cached keys, want 1", n)
	}
	oneKey := func(kid string) string {
		hdr := jws.NewHeaders()
		hdr.Set(jws.KeyIDKey, kid)
		tok, err := jws.Sign([]byte(`{"sub":"x"}`), jws.WithKey(jwa.HS256, []byte("secret"), jws.WithProtectedHeaders(hdr)))
		if err != nil {
			t.Fatal(err)
		}
		return string(tok)
	}
	_, err := v.Verify(context.Background(), oneKey("oct"))
	wantCode(t, err, store.CodeUnauthorized, `unsupported signing algorithm "HS256"`)
}

func TestVerifierAttackShapes(t *testing.T) {
	fi := newFakeIssuer(t)
	v, tok := fi.verifier(t, Config{Leeway: 0})
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	// The JSON serialization of the very same valid signature.
	jsonSer, _ := json.Marshal(map[string]any{"payload": parts[1], "protected": parts[0], "signature": parts[2], "x": "a.b"})
	// An attacker's key embedded in the header ("jwk"), with its own kid.
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	key, _ := jwk.FromRaw(priv)
	key.Set(jwk.KeyIDKey, "attacker")
	pub, _ := key.PublicKey()
	hdr := jws.NewHeaders()
	hdr.Set(jws.KeyIDKey, "attacker")
	hdr.Set(jws.JWKKey, pub)
	embedded, err := jws.Sign([]byte(`{"sub":"x","iss":"`+fi.URL+`","aud":"`+fi.URL+`","exp":9999999999}`), jws.WithKey(jwa.EdDSA, key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	sub := mustSubject(t, tok)
	signed := func(claims map[string]any) string {
		tok, err := fi.iss.Sign(claims)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	now := time.Now()
	tests := []struct {
		name, token, detail string
	}{
		{"Oversized", strings.Repeat("A", MaxTokenLen-1) + ".B.C", "longer than 8192 bytes"},
		{"JSONSerialization", string(jsonSer), "not a compact JWS"},
		{"Whitespace", parts[0] + ". " + parts[1] + "." + parts[2], "not a compact JWS"},
		{"UnknownAlg", b64(`{"alg":"XX256","kid":"k"}`) + "." + parts[1] + "." + parts[2], "unsupported signing algorithm (accepted"},
		{"EmbeddedJWK", string(embedded), "signing key not found"},
		{"Crit", b64(`{"alg":"EdDSA","kid":"`+fi.iss.KeyID()+`","b64":false,"crit":["b64"]}`) + "." + parts[1] + "." + parts[2], "crit"},
		{"NoKid", b64(`{"alg":"EdDSA"}`) + "." + parts[1] + "." + parts[2], "no key id"},
		{"EmptySub", signed(map[string]any{"sub": "", "iss": fi.URL, "aud": fi.URL, "exp": now.Add(time.Minute).Unix()}), "no subject"},
		{"IatInFuture", signed(map[string]any{"sub": sub, "iss": fi.URL, "aud": fi.URL, "iat": now.Add(time.Hour).Unix(), "exp": now.Add(2 * time.Hour).Unix()}), "issued in the future"},
		{"ExpiredNoLeeway", signed(map[string]any{"sub": sub, "iss": fi.URL, "aud": fi.URL, "exp": now.Add(-2 * time.Second).Unix()}), "expired"},
		{"AudArrayWithoutUs", signed(map[string]any{"sub": sub, "iss": fi.URL, "aud": []string{"https://other"}, "exp": now.Add(time.Minute).Unix()}), "audience"},
		{"ClaimsNotJSON", parts[0] + "." + b64("not json") + "." + parts[2], "invalid token signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), tt.token)
			wantCode(t, err, store.CodeUnauthorized, tt.detail)
			if strings.Contains(store.ErrorMessage(err), "XX256") {
				t.Errorf("the message %q echoes the header", store.ErrorMessage(err))
			}
		})
	}
	// aud as an array holding us is fine.
	if _, err := v.Verify(context.Background(), signed(map[string]any{"sub": sub, "iss": fi.URL, "aud": []string{"https://other", fi.URL}, "exp": now.Add(time.Minute).Unix()})); err != nil {
		t.Errorf("aud array: %v", err)
	}
}

func mustSubject(t testing.TB, tok string) string {
	t.Helper()
	payload, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Sub string `json:"sub"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatal(err)
	}
	return c.Sub
}

// joinJWKS merges key sets.
func joinJWKS(t testing.TB, sets ...[]byte) []byte {
	t.Helper()
	var all []json.RawMessage
	for _, s := range sets {
		var set struct {
			Keys []json.RawMessage `json:"keys"`
		}
		if err := json.Unmarshal(s, &set); err != nil {
			t.Fatal(err)
		}
		all = append(all, set.Keys...)
	}
	out, _ := json.Marshal(map[string]any{"keys": all})
	return out
}
