// Package auth verifies Better Auth JWTs against a JWKS fetched over HTTP,
// and, in development, issues such tokens itself.
package auth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"golang.org/x/sync/singleflight"

	"github.com/evotodo/evo/store"
)

// MaxTokenLen bounds the tokens the verifier looks at.
const MaxTokenLen = 8192

// allowedAlgs are the algorithms Better Auth can sign with that Evo accepts:
// EdDSA (its default), RS256 and ES256. Anything else (none, HS*, ...) is
// rejected before a key is looked at.
var allowedAlgs = map[jwa.SignatureAlgorithm]bool{jwa.EdDSA: true, jwa.RS256: true, jwa.ES256: true}

// Claims is what a verified token says about its bearer.
type Claims struct {
	UserID  string
	Expires time.Time
}

// Users is what the verifier needs of the store.
type Users interface {
	GetUser(ctx context.Context, id string) (store.User, error)
}

// Config configures a Verifier.
type Config struct {
	JWKSURL  string // where the key set is fetched
	Issuer   string // required iss
	Audience string // required aud
	// CacheLifespan is how long a fetched key set is trusted (default 300s).
	CacheLifespan time.Duration
	// MaxKeys is the most keys kept from a key set (default 16).
	MaxKeys int
	// RefreshInterval is the least time between fetches caused by unknown
	// key ids, and between retries after a failed fetch (default 10s).
	RefreshInterval time.Duration
	// Leeway is the clock skew allowed on exp, nbf and iat (default 30s).
	Leeway time.Duration
	// FetchTimeout bounds one JWKS fetch (default 10s).
	FetchTimeout time.Duration
}

// Verifier checks bearer tokens. It caches the key set, refetches it when a
// token names an unknown key (at most once per RefreshInterval, whatever
// the number of such tokens), shares one fetch among concurrent requests,
// and keeps using a stale key set while the issuer is down.
type Verifier struct {
	cfg    Config
	users  Users
	client *http.Client
	log    *slog.Logger
	group  singleflight.Group

	mu          sync.Mutex
	set         jwk.Set   // nil until the first successful fetch
	freshUntil  time.Time // after this, the next use fetches again
	lastForced  time.Time // last fetch caused by an unknown kid
	failedUntil time.Time // no key set and the last fetch failed: answer 503 until then
	fetches     int
}

// NewVerifier returns a verifier; no fetch happens before the first token.
func NewVerifier(cfg Config, users Users, log *slog.Logger) *Verifier {
	if cfg.CacheLifespan <= 0 {
		cfg.CacheLifespan = 300 * time.Second
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = 16
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = 10 * time.Second
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = 10 * time.Second
	}
	return &Verifier{cfg: cfg, users: users, log: log, client: &http.Client{Timeout: cfg.FetchTimeout}}
}

func unauthorized(format string, args ...any) error {
	return store.Errorf(store.CodeUnauthorized, format, args...)
}

// errJWKSUnavailable is returned when no key set could be had.
var errJWKSUnavailable = store.Errorf(store.CodeUnavailable, "authentication service unavailable: cannot fetch the signing keys")

// Verify checks token and that its user exists. Errors are CodeUnauthorized
// with a message naming the failed check, or CodeUnavailable when the JWKS
// (or the database) cannot be reached. The token is never part of an error.
func (v *Verifier) Verify(ctx context.Context, token string) (Claims, error) {
	switch {
	case token == "":
		return Claims{}, unauthorized("missing token")
	case len(token) > MaxTokenLen:
		return Claims{}, unauthorized("malformed token: longer than %d bytes", MaxTokenLen)
	case strings.Count(token, ".") != 2:
		return Claims{}, unauthorized("malformed token: not a compact JWS")
	}
	msg, err := jws.Parse([]byte(token))
	if err != nil || len(msg.Signatures()) != 1 {
		return Claims{}, unauthorized("malformed token")
	}
	hdr := msg.Signatures()[0].ProtectedHeaders()
	alg := hdr.Algorithm()
	if !allowedAlgs[alg] {
		return Claims{}, unauthorized("unsupported signing algorithm %q", alg.String())
	}
	key, err := v.key(ctx, hdr.KeyID())
	if err != nil {
		return Claims{}, err
	}
	if keyAlg(key) != alg {
		return Claims{}, unauthorized("signing algorithm does not match the signing key")
	}
	if _, err := jws.Verify([]byte(token), jws.WithKey(alg, key)); err != nil {
		return Claims{}, unauthorized("invalid token signature")
	}
	tok, err := jwt.Parse([]byte(token), jwt.WithVerify(false), jwt.WithValidate(true),
		jwt.WithIssuer(v.cfg.Issuer), jwt.WithAudience(v.cfg.Audience),
		jwt.WithAcceptableSkew(v.cfg.Leeway),
		jwt.WithRequiredClaim(jwt.ExpirationKey), jwt.WithRequiredClaim(jwt.SubjectKey))
	if err != nil {
		return Claims{}, claimError(err)
	}
	if _, err := v.users.GetUser(ctx, tok.Subject()); err != nil {
		if store.ErrorCode(err) == store.CodeNotFound {
			return Claims{}, unauthorized("token user does not exist")
		}
		return Claims{}, fmt.Errorf("look up token user: %w", err)
	}
	return Claims{UserID: tok.Subject(), Expires: tok.Expiration()}, nil
}

func claimError(err error) error {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired()):
		return unauthorized("token has expired")
	case errors.Is(err, jwt.ErrTokenNotYetValid()):
		return unauthorized("token is not yet valid")
	case errors.Is(err, jwt.ErrInvalidIssuedAt()):
		return unauthorized("token issued in the future")
	case errors.Is(err, jwt.ErrInvalidIssuer()):
		return unauthorized("invalid token issuer")
	case errors.Is(err, jwt.ErrInvalidAudience()):
		return unauthorized("invalid token audience")
	case errors.Is(err, jwt.ErrMissingRequiredClaim(jwt.SubjectKey)):
		return unauthorized("token has no subject (sub)")
	case errors.Is(err, jwt.ErrMissingRequiredClaim(jwt.ExpirationKey)):
		return unauthorized("token has no expiry (exp)")
	}
	return unauthorized("malformed token claims")
}

// keyAlg returns the key's algorithm, inferred from its type when the JWKS
// entry has no "alg" (Better Auth before 1.3.8).
func keyAlg(k jwk.Key) jwa.SignatureAlgorithm {
	if a := k.Algorithm(); a != nil && a.String() != "" {
		return jwa.SignatureAlgorithm(a.String())
	}
	switch k.KeyType() {
	case jwa.OKP:
		return jwa.EdDSA
	case jwa.RSA:
		return jwa.RS256
	case jwa.EC:
		return jwa.ES256
	}
	return ""
}

// key returns the key named kid, refetching the key set once if kid is
// unknown and the last such refetch is RefreshInterval ago.
func (v *Verifier) key(ctx context.Context, kid string) (jwk.Key, error) {
	if kid == "" {
		return nil, unauthorized("token has no key id (kid)")
	}
	set, err := v.keySet(ctx, false)
	if err != nil {
		return nil, err
	}
	if k, ok := set.LookupKeyID(kid); ok {
		return k, nil
	}
	v.mu.Lock()
	force := time.Since(v.lastForced) >= v.cfg.RefreshInterval
	if force {
		v.lastForced = time.Now()
	}
	v.mu.Unlock()
	if force {
		if set, err = v.keySet(ctx, true); err != nil {
			return nil, err
		}
		if k, ok := set.LookupKeyID(kid); ok {
			return k, nil
		}
	}
	return nil, unauthorized("token signing key not found in JWKS")
}

// keySet returns the cached key set, fetching it when it is stale or force
// is set. A failed fetch keeps the stale set (retried after RefreshInterval);
// with no set at all it is errJWKSUnavailable.
func (v *Verifier) keySet(ctx context.Context, force bool) (jwk.Set, error) {
	v.mu.Lock()
	set, fresh, failed := v.set, time.Now().Before(v.freshUntil), time.Now().Before(v.failedUntil)
	v.mu.Unlock()
	switch {
	case set != nil && fresh && !force:
		return set, nil
	case set == nil && failed:
		return nil, errJWKSUnavailable
	}
	// One fetch for all waiting requests; it is not cancelled when the
	// request that started it goes away.
	ch := v.group.DoChan("jwks", func() (any, error) { return v.fetch(context.WithoutCancel(ctx)) })
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-ch:
		if r.Err == nil {
			return r.Val.(jwk.Set), nil
		}
	}
	if set != nil {
		return set, nil
	}
	return nil, errJWKSUnavailable
}

func (v *Verifier) fetch(ctx context.Context) (jwk.Set, error) {
	set, err := v.download(ctx)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.fetches++
	if err != nil {
		v.log.Warn("JWKS fetch failed", slog.String("url", v.cfg.JWKSURL), slog.Bool("stale_keys_in_use", v.set != nil), slog.Any("error", err))
		v.freshUntil = time.Now().Add(v.cfg.RefreshInterval)
		v.failedUntil = time.Now().Add(time.Second)
		return nil, err
	}
	v.set, v.freshUntil = set, time.Now().Add(v.cfg.CacheLifespan)
	return set, nil
}

func (v *Verifier) download(ctx context.Context) (jwk.Set, error) {
	ctx, cancel := context.WithTimeout(ctx, v.cfg.FetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.cfg.JWKSURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("JWKS answered %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	parsed, err := jwk.Parse(body)
	if err != nil {
		return nil, fmt.Errorf("parse JWKS: %w", err)
	}
	// Keep at most MaxKeys public signing keys.
	set := jwk.NewSet()
	for i := 0; i < parsed.Len() && set.Len() < v.cfg.MaxKeys; i++ {
		k, _ := parsed.Key(i)
		if pub, err := k.PublicKey(); err == nil && allowedAlgs[keyAlg(pub)] {
			set.AddKey(pub)
		}
	}
	if set.Len() == 0 {
		return nil, errors.New("JWKS holds no usable signing key")
	}
	return set, nil
}

// Fetches returns how many JWKS fetches were made.
func (v *Verifier) Fetches() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.fetches
}
