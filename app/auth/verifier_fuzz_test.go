package auth

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/evotodo/evo/store"
)

// fuzzEnv is a verifier with a real JWKS over HTTP and a SQLite user table,
// shared by the iterations of a fuzz target.
type fuzzEnv struct {
	fi    *fakeIssuer
	v     *Verifier
	user  string
	token string
	priv  ed25519.PrivateKey
}

func newFuzzEnv(f *testing.F) *fuzzEnv {
	fi := newFakeIssuer(f)
	v, tok := fi.verifier(f, Config{Leeway: 30 * time.Second})
	claims, err := v.Verify(context.Background(), tok) // warms the key cache
	if err != nil {
		f.Fatal(err)
	}
	var priv ed25519.PrivateKey
	if err := fi.iss.key.Raw(&priv); err != nil {
		f.Fatal(err)
	}
	return &fuzzEnv{fi: fi, v: v, user: claims.UserID, token: tok, priv: priv}
}

// verify runs Verify and checks what every answer must be: a refusal is
// unauthorized or unavailable (never internal: the API answers those 500),
// and its message never repeats the token.
func (e *fuzzEnv) verify(t *testing.T, token string) (Claims, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	claims, err := e.v.Verify(ctx, token)
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Verify(%q) took %v", token, took)
	}
	if err == nil {
		return claims, true
	}
	switch code := store.ErrorCode(err); code {
	case store.CodeUnauthorized:
	case store.CodeUnavailable:
		t.Fatalf("unavailable with a warm key cache: %v", err) // the JWKS server is up
	default:
		t.Fatalf("Verify(%q): code %q (%v), want unauthorized", token, code, err)
	}
	if msg := err.Error(); len(token) >= 8 && strings.Contains(msg, token) {
		t.Fatalf("the error %q repeats the token", msg)
	}
	return Claims{}, false
}

// FuzzVerify gives Verify arbitrary strings as bearer tokens. Properties: no
// panic; every refusal is unauthorized (with the JWKS up), never internal,
// and does not echo the token; nothing is accepted but the one token the
// issuer signed (a different base64 spelling of its signature aside: the
// signed part, header.payload, must be byte for byte the issued one).
func FuzzVerify(f *testing.F) {
	e := newFuzzEnv(f)
	h, p, _ := strings.Cut(e.token, ".")
	p, s, _ := strings.Cut(p, ".")
	b64 := base64.RawURLEncoding.EncodeToString
	for _, seed := range []string{
		e.token,
		h + "." + p + ".",
		h + "." + p,
		b64([]byte(`{"alg":"none"}`)) + "." + p + ".",
		b64([]byte(`{"alg":"HS256","kid":"`+e.fi.iss.KeyID()+`"}`)) + "." + p + "." + s,
		b64([]byte(`{"alg":"EdDSA","kid":"`+e.fi.iss.KeyID()+`","crit":["b64"],"b64":false}`)) + "." + p + "." + s,
		b64([]byte(`{"alg":"EdDSA","kid":"nope"}`)) + "." + p + "." + s,
		b64([]byte(`{"alg":"EdDSA","kid":"`+e.fi.iss.KeyID()+`","jwk":{"kty":"OKP","crv":"Ed25519","x":"AA"}}`)) + "." + p + "." + s,
		`{"payload":"` + p + `","signatures":[{"protected":"` + h + `","signature":"` + s + `"}]}`,
		"..", "a.b.c", "a.b.c.d.e", "Bearer " + e.token, e.token + " ", strings.Repeat("a", MaxTokenLen+1),
		"eyJ.eyJ.x", b64([]byte(`{"alg":"EdDSA","kid":1}`)) + "." + p + "." + s,
	} {
		f.Add(seed)
	}
	signed := h + "." + p
	f.Fuzz(func(t *testing.T, token string) {
		if _, ok := e.verify(t, token); ok && !strings.HasPrefix(token, signed+".") {
			t.Fatalf("accepted a token the issuer did not sign: %q", token)
		}
	})
}

// FuzzVerifySigned signs arbitrary headers and payloads with the issuer's
// real key, so that every check after the signature (algorithm, key id,
// crit, iss, aud, exp, nbf, iat, sub) sees fuzzed input. The oracle decodes
// the same JSON with encoding/json: whatever Verify accepts has alg EdDSA,
// the issuer's kid, no crit, iss and aud naming the issuer, an exp not past,
// no nbf or iat in the future, and sub the existing user, which is what the
// claims say.
func FuzzVerifySigned(f *testing.F) {
	e := newFuzzEnv(f)
	kid := e.fi.iss.KeyID()
	iss := e.fi.URL
	now := time.Now().Unix()
	hdr := `{"alg":"EdDSA","kid":"` + kid + `"}`
	claims := func(extra string) string {
		return `{"sub":"` + e.user + `","iss":"` + iss + `","aud":"` + iss + `","exp":` + itoa(now+3600) + extra + `}`
	}
	for _, seed := range [][2]string{
		{hdr, claims("")},
		{hdr, claims(`,"iat":` + itoa(now))},
		{hdr, claims(`,"nbf":` + itoa(now+3600))},
		{hdr, claims(`,"aud":["x","` + iss + `"]`)},
		{hdr, claims(`,"sub":"nobody"`)},
		{hdr, claims(`,"sub":""`)},
		{hdr, claims(`,"sub":"a\u0000b"`)},
		{hdr, claims(`,"exp":"` + itoa(now+3600) + `"`)},
		{hdr, claims(`,"exp":1e30`)},
		{hdr, claims(`,"exp":null`)},
		{hdr, `{"sub":"` + e.user + `","iss":"` + iss + `","aud":"` + iss + `"}`},
		{hdr, `[]`},
		{`{"alg":"EdDSA","kid":"` + kid + `","crit":["exp"]}`, claims("")},
		{`{"alg":"ES256","kid":"` + kid + `"}`, claims("")},
		{`{"alg":"EdDSA"}`, claims("")},
		{`{"alg":"EdDSA","kid":"` + kid + `","b64":false}`, claims("")},
		{`{"alg":"EdDSA","kid":"` + kid + `","typ":"JWT","cty":"JWT"}`, claims("")},
		{hdr, claims(`,"iss":"` + iss + `/"`)},
		{hdr, `{"sub":"` + e.user + `","sub":"x","iss":"` + iss + `","aud":"` + iss + `","exp":` + itoa(now+3600) + `}`},
	} {
		f.Add(seed[0], seed[1])
	}
	b64 := base64.RawURLEncoding.EncodeToString
	f.Fuzz(func(t *testing.T, header, payload string) {
		input := b64([]byte(header)) + "." + b64([]byte(payload))
		token := input + "." + b64(ed25519.Sign(e.priv, []byte(input)))
		got, ok := e.verify(t, token)
		if !ok {
			return
		}
		var h map[string]any
		var c map[string]any
		if err := json.Unmarshal([]byte(header), &h); err != nil {
			t.Fatalf("accepted a token whose header %q is not JSON: %v", header, err)
		}
		if err := json.Unmarshal([]byte(payload), &c); err != nil {
			t.Fatalf("accepted a token whose payload %q is not JSON: %v", payload, err)
		}
		why := ""
		leeway := e.v.cfg.Leeway.Seconds()
		now := float64(time.Now().Unix())
		switch {
		case h["alg"] != "EdDSA":
			why = "alg is not EdDSA"
		case h["kid"] != kid:
			why = "kid is not the issuer's"
		case h["crit"] != nil:
			why = "crit is set"
		case c["iss"] != iss:
			why = "iss is not the issuer"
		case !audienceHas(c["aud"], iss):
			why = "aud does not name the issuer"
		case c["sub"] != e.user || got.UserID != e.user:
			why = "sub is not the user"
		case !numericBefore(c["nbf"], now+leeway+1):
			why = "nbf is in the future"
		case !numericBefore(c["iat"], now+leeway+1):
			why = "iat is in the future"
		case got.Expires.Unix() < int64(now-leeway-1) || c["exp"] == nil:
			why = "exp is past or missing"
		}
		if why != "" {
			t.Fatalf("accepted header %s payload %s (%+v): %s", header, payload, got, why)
		}
	})
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

func audienceHas(aud any, want string) bool {
	switch a := aud.(type) {
	case string:
		return a == want
	case []any:
		for _, x := range a {
			if x == want {
				return true
			}
		}
	}
	return false
}

// numericBefore: v is absent, or a time (a JSON number, or a string holding
// one, as jwx also reads) before limit.
func numericBefore(v any, limit float64) bool {
	switch n := v.(type) {
	case nil:
		return true
	case float64:
		return n < limit && !math.IsNaN(n)
	case string:
		var f float64
		if err := json.Unmarshal([]byte(n), &f); err == nil {
			return f < limit
		}
	}
	return true // jwx refuses what it cannot read as a time; nothing to compare
}
