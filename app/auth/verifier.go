// Package auth verifies Better Auth JWTs against a JWKS fetched over HTTP,
// and, in development, issues such tokens itself.
package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"

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
	// ExistingUsers returns those of ids that are users.
	ExistingUsers(ctx context.Context, ids []string) ([]string, error)
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
	// IssuerHint ends the 401 of a token whose iss or aud is not Issuer or
	// Audience: what sets them (e.g. "BETTER_AUTH_URL").
	IssuerHint string
	// KeyHint ends the 401 of a token whose kid is not in the JWKS: where the
	// keys come from (the dev issuer: its DATA_DIR).
	KeyHint string
	// Keys, if set, is the key set itself, used instead of fetching
	// JWKSURL (the dev issuer's own keys): the same checks, no HTTP.
	Keys jwk.Set
}

// Verifier checks bearer tokens. It caches the key set for CacheLifespan,
// refetches it when a token names an unknown key (at most once per
// RefreshInterval, whatever the number of such tokens), makes concurrent
// requests share one fetch, and keeps using a stale key set while the
// issuer is down.
type Verifier struct {
	cfg    Config
	users  Users
	client *http.Client
	log    *slog.Logger

	// mu guards everything below. It is never held during a fetch: a fetch
	// runs in its own goroutine and reports by closing inflight.
	mu         sync.Mutex
	set        jwk.Set       // nil until the first successful fetch
	freshUntil time.Time     // the set is used without a fetch until then
	failing    bool          // the last fetch failed
	retryAt    time.Time     // after a failed fetch, no new one before this
	lastForced time.Time     // last fetch caused by an unknown kid
	inflight   chan struct{} // the fetch in flight, closed when it ends; nil if none
	fetches    int
	static     bool // the keys came with Config.Keys: never fetched

	// verified remembers tokens whose signature and claims were checked, by SHA-256:
	// a client sends the same token with every request for its whole life (Better Auth:
	// 15 minutes), and parsing and verifying it again costs more than the rest of a
	// REST call. See cached.
	vmu      sync.RWMutex
	verified map[[sha256.Size]byte]verifiedToken

	// known remembers users found to exist, until when (see checkUser).
	kmu        sync.Mutex
	known      map[string]knownUser
	refreshing bool // refreshLoop runs
}

// knownUser is a user found to exist.
type knownUser struct {
	until time.Time // trusted until then
	used  time.Time // last request that relied on it
}

// userKeepWarm is how long after its last request a user stays in the user cache,
// looked up again in the background (see refreshUsers); a user who comes back later
// is looked up on the request path once.
const userKeepWarm = time.Minute

// usersPerLookup is the most users one background lookup asks for.
const usersPerLookup = 1000

// userRefreshTimeout bounds a background lookup of the known users.
const userRefreshTimeout = 5 * time.Second

// UserCacheTTL is how long a user found to exist is trusted without asking the database
// again: a user deleted from the "user" table has its tokens refused by every replica
// within this time (at once on the replica that sees a create fail for it: ForgetUser).
// Only users that exist are remembered; a missing user is looked up every time.
const UserCacheTTL = time.Second

// maxKnownUsers bounds the user cache; when it is full, it is emptied.
const maxKnownUsers = 100_000

// verifiedToken is a checked token: its claims, and until when they may be trusted
// without checking again: its expiry (plus leeway), but no later than the freshness of
// the key set it was checked with, so that a key removed from the JWKS stops working
// as it would without this cache.
type verifiedToken struct {
	claims Claims
	until  time.Time
}

// maxVerified bounds the verified-token cache; when it is full, expired entries are
// dropped, and if that is not enough, all of them.
const maxVerified = 100_000

// retryNoKeys is how long, with no key set at all, requests are answered
// 503 right away after a failed fetch before the next one is tried.
const retryNoKeys = time.Second

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
	v := &Verifier{cfg: cfg, users: users, log: log, client: &http.Client{Timeout: cfg.FetchTimeout}}
	if cfg.Keys != nil {
		v.static = true
		set, err := v.usableKeys(cfg.Keys)
		if err != nil {
			log.Error("verifier key set", slog.Any("error", err))
		} else {
			v.set, v.freshUntil = set, time.Unix(1<<62, 0)
		}
	}
	return v
}

func unauthorized(format string, args ...any) error {
	return store.Errorf(store.CodeUnauthorized, format, args...)
}

// errJWKSUnavailable is returned when no key set could be had.
var errJWKSUnavailable = store.Errorf(store.CodeUnavailable, "authentication service unavailable: cannot fetch the signing keys")

// compactJWS is the alphabet of a compact JWS: base64url and the dots.
// Checking it first keeps the JSON serialization, whitespace and the
// unencoded payload (b64=false) away from the parser.
func compactJWS(token string) bool {
	for i := 0; i < len(token); i++ {
		c := token[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return strings.Count(token, ".") == 2
}

// Verify checks token and that its user exists. Errors are CodeUnauthorized
// with a message naming the failed check, or CodeUnavailable when the JWKS
// (or the database) cannot be reached. The token is never part of an error.
func (v *Verifier) Verify(ctx context.Context, token string) (Claims, error) {
	switch {
	case token == "":
		return Claims{}, unauthorized("missing token")
	case len(token) > MaxTokenLen:
		return Claims{}, unauthorized("malformed token: longer than %d bytes", MaxTokenLen)
	}
	// A cached token passed every check below, compactJWS included.
	sum := sha256.Sum256([]byte(token))
	if claims, ok := v.cached(sum); ok {
		return claims, v.checkUser(ctx, claims.UserID)
	}
	if !compactJWS(token) {
		return Claims{}, unauthorized("malformed token: not a compact JWS (header.payload.signature)")
	}
	msg, err := jws.Parse([]byte(token), jws.WithCompact())
	if err != nil || len(msg.Signatures()) != 1 {
		return Claims{}, unauthorized("malformed token")
	}
	// Only the protected header counts; a "jwk", "jku" or "x5u" in it is
	// ignored: keys come from the JWKS alone.
	hdr := msg.Signatures()[0].ProtectedHeaders()
	alg := hdr.Algorithm()
	if !allowedAlgs[alg] {
		// Name only a registered algorithm: the header is the sender's text.
		var known jwa.SignatureAlgorithm
		if known.Accept(alg.String()) != nil {
			return Claims{}, unauthorized("unsupported signing algorithm (accepted: EdDSA, RS256, ES256)")
		}
		return Claims{}, unauthorized("unsupported signing algorithm %q (accepted: EdDSA, RS256, ES256)", alg.String())
	}
	if len(hdr.Critical()) > 0 {
		// RFC 7515 4.1.11: extensions we do not implement (b64=false, ...)
		// must be rejected. Better Auth sets no "crit".
		return Claims{}, unauthorized("unsupported critical header parameters (crit)")
	}
	key, err := v.key(ctx, hdr.KeyID())
	if err != nil {
		return Claims{}, err
	}
	if keyAlg(key) != alg {
		return Claims{}, unauthorized("signing algorithm %q does not match the signing key", alg.String())
	}
	if _, err := jws.Verify([]byte(token), jws.WithCompact(), jws.WithKey(alg, key)); err != nil {
		return Claims{}, unauthorized("invalid token signature")
	}
	tok, err := jwt.Parse([]byte(token), jwt.WithVerify(false), jwt.WithValidate(true),
		jwt.WithIssuer(v.cfg.Issuer), jwt.WithAudience(v.cfg.Audience),
		jwt.WithAcceptableSkew(v.cfg.Leeway))
	if err != nil {
		return Claims{}, v.claimError(err, token)
	}
	// Checked here, not with jwt.WithRequiredClaim, whose errors do not
	// say which claim is missing.
	if _, ok := tok.Get(jwt.ExpirationKey); !ok {
		return Claims{}, unauthorized("token has no expiry (exp)")
	}
	if tok.Subject() == "" {
		return Claims{}, unauthorized("token has no subject (sub)")
	}
	if strings.ContainsRune(tok.Subject(), 0) {
		// No user id holds NUL, and PostgreSQL cannot even compare it.
		return Claims{}, unauthorized("token subject (sub) is not a valid user id")
	}
	claims := Claims{UserID: tok.Subject(), Expires: tok.Expiration()}
	if err := v.checkUser(ctx, claims.UserID); err != nil {
		return Claims{}, err
	}
	v.remember(sum, claims)
	return claims, nil
}

// checkUser checks that the token's user exists. A user found to exist is not looked up
// again on the request path for UserCacheTTL, counted from before the lookup: a user
// deleted at time T is refused from T + UserCacheTTL on, whatever lookups were in
// flight at T. Meanwhile refreshLoop looks every user used within userKeepWarm up
// again, in one query per usersPerLookup, every UserCacheTTL/2, and extends their entries:
// a user who keeps making requests is looked up on the request path once, not once a
// second, and the database sees two queries a second per replica (per 1,000 users),
// not one per request.
func (v *Verifier) checkUser(ctx context.Context, id string) error {
	now := time.Now()
	v.kmu.Lock()
	e, ok := v.known[id]
	fresh := ok && now.Before(e.until)
	if fresh {
		e.used = now
		v.known[id] = e
	}
	v.kmu.Unlock()
	if fresh {
		return nil
	}
	if err := v.lookUpUser(ctx, id); err != nil {
		return err
	}
	v.rememberUser(id, now)
	return nil
}

// rememberUser notes that id existed at time at, and starts refreshLoop if it does not
// run.
func (v *Verifier) rememberUser(id string, at time.Time) {
	v.kmu.Lock()
	defer v.kmu.Unlock()
	if v.known == nil || len(v.known) >= maxKnownUsers {
		v.known = make(map[string]knownUser)
	}
	e := v.known[id]
	v.known[id] = knownUser{until: maxTime(e.until, at.Add(UserCacheTTL)), used: time.Now()}
	if !v.refreshing {
		v.refreshing = true
		go v.refreshLoop()
	}
}

// refreshLoop runs refreshUsers every UserCacheTTL/2 until no user is left to refresh.
func (v *Verifier) refreshLoop() {
	tick := time.NewTicker(UserCacheTTL / 2)
	defer tick.Stop()
	for range tick.C {
		if !v.refreshUsers() {
			return
		}
	}
}

// refreshUsers looks up again, usersPerLookup at a time, every known user used within
// userKeepWarm: one found is trusted for UserCacheTTL from before its lookup, one gone
// is forgotten (its next request is refused). Users not used for longer are forgotten.
// If the database fails, the entries are left to expire: their next requests look
// them up, and fail as the database does. It reports whether any user is left; if none
// is, refreshLoop ends (rememberUser starts it again).
func (v *Verifier) refreshUsers() bool {
	now := time.Now()
	v.kmu.Lock()
	ids := make([]string, 0, len(v.known))
	for id, e := range v.known {
		if now.Sub(e.used) > userKeepWarm {
			delete(v.known, id)
			continue
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		v.refreshing = false
	}
	v.kmu.Unlock()
	for chunk := range slices.Chunk(ids, usersPerLookup) {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), userRefreshTimeout)
		found, err := v.users.ExistingUsers(ctx, chunk)
		cancel()
		if err != nil {
			continue
		}
		exists := make(map[string]bool, len(found))
		for _, id := range found {
			exists[id] = true
		}
		v.kmu.Lock()
		for _, id := range chunk {
			switch e, ok := v.known[id]; {
			case !ok: // forgotten meanwhile (ForgetUser): not brought back
			case exists[id]:
				e.until = maxTime(e.until, start.Add(UserCacheTTL))
				v.known[id] = e
			default:
				delete(v.known, id)
			}
		}
		v.kmu.Unlock()
	}
	return len(ids) > 0
}

// ForgetUser drops id from the user cache: the next token of that user looks the user
// up again. For a caller that learned the user is gone (a create whose user row was
// deleted).
func (v *Verifier) ForgetUser(id string) {
	v.kmu.Lock()
	defer v.kmu.Unlock()
	delete(v.known, id)
}

// lookUpUser asks the store whether the user exists.
func (v *Verifier) lookUpUser(ctx context.Context, id string) error {
	found, err := v.users.ExistingUsers(ctx, []string{id})
	switch {
	case err != nil:
		return fmt.Errorf("look up token user: %w", err)
	case !slices.Contains(found, id):
		return unauthorized("token user does not exist")
	}
	return nil
}

// cached returns the claims of a token verified before, if they may still be trusted:
// the token has not expired and the key set is fresh (when it is not, Verify takes the
// full path, which refetches it).
func (v *Verifier) cached(sum [sha256.Size]byte) (Claims, bool) {
	v.vmu.RLock()
	e, ok := v.verified[sum]
	v.vmu.RUnlock()
	if !ok {
		return Claims{}, false
	}
	now := time.Now()
	v.mu.Lock()
	fresh := v.set != nil && now.Before(v.freshUntil)
	v.mu.Unlock()
	if !fresh || !now.Before(e.until) {
		return Claims{}, false
	}
	return e.claims, true
}

// remember caches a verified token until it expires or the key set it was checked
// with is no longer fresh.
func (v *Verifier) remember(sum [sha256.Size]byte, claims Claims) {
	v.mu.Lock()
	until := v.freshUntil
	v.mu.Unlock()
	until = minTime(until, claims.Expires.Add(v.cfg.Leeway))
	now := time.Now()
	if !now.Before(until) {
		return
	}
	v.vmu.Lock()
	defer v.vmu.Unlock()
	if v.verified == nil {
		v.verified = make(map[[sha256.Size]byte]verifiedToken)
	}
	if len(v.verified) >= maxVerified {
		for k, e := range v.verified {
			if !now.Before(e.until) {
				delete(v.verified, k)
			}
		}
		if len(v.verified) >= maxVerified {
			clear(v.verified)
		}
	}
	v.verified[sum] = verifiedToken{claims: claims, until: until}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// hint is a hint for the end of an error message: "" or "; " + h.
func hint(h string) string {
	if h == "" {
		return ""
	}
	return "; " + h
}

// claimValue quotes a claim of the sender's token for an error message: at
// most 100 bytes, Go-quoted (no control characters reach a log or a client).
func claimValue(s string) string {
	if len(s) > 100 {
		s = strings.ToValidUTF8(s[:100], "") + "..."
	}
	return fmt.Sprintf("%q", s)
}

func (v *Verifier) claimError(err error, token string) error {
	switch {
	case errors.Is(err, jwt.ErrInvalidIssuer()), errors.Is(err, jwt.ErrInvalidAudience()):
		// Expected vs got: a token minted for another URL (evo token without the
		// server's PORT or PUBLIC_URL) is the usual cause. The claims are the
		// sender's own, and its signature was checked.
		var iss, aud string
		if tok, perr := jwt.Parse([]byte(token), jwt.WithVerify(false), jwt.WithValidate(false)); perr == nil {
			iss, aud = claimValue(tok.Issuer()), claimValue(strings.Join(tok.Audience(), ", "))
		}
		if errors.Is(err, jwt.ErrInvalidIssuer()) {
			return unauthorized("invalid token issuer: got iss %s, want %q%s", iss, v.cfg.Issuer, hint(v.cfg.IssuerHint))
		}
		return unauthorized("invalid token audience: got aud %s, want %q%s", aud, v.cfg.Audience, hint(v.cfg.IssuerHint))
	}
	return claimError(err)
}

func claimError(err error) error {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired()):
		return unauthorized("token has expired")
	case errors.Is(err, jwt.ErrTokenNotYetValid()):
		return unauthorized("token is not yet valid (nbf)")
	case errors.Is(err, jwt.ErrInvalidIssuedAt()):
		return unauthorized("token issued in the future (iat)")
	case errors.Is(err, jwt.ErrInvalidIssuer()):
		return unauthorized("invalid token issuer")
	case errors.Is(err, jwt.ErrInvalidAudience()):
		return unauthorized("invalid token audience")
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

// key returns the key named kid. An unknown kid may mean the issuer rotated
// its keys, so the request waits for a fetch: the one in flight if there is
// one, else a new one if the last fetch caused by an unknown kid is
// RefreshInterval ago. Otherwise the kid is unknown, and that is a 401: a
// flood of random kids costs the issuer at most one fetch per interval.
func (v *Verifier) key(ctx context.Context, kid string) (jwk.Key, error) {
	if kid == "" {
		return nil, unauthorized("token has no key id (kid)")
	}
	set, err := v.keySet(ctx)
	if err != nil {
		return nil, err
	}
	if k, ok := set.LookupKeyID(kid); ok {
		return k, nil
	}
	v.mu.Lock()
	// A fetch may have ended since keySet returned: look in its set first,
	// or this request would miss the very refetch another one caused.
	if k, ok := v.set.LookupKeyID(kid); ok {
		v.mu.Unlock()
		return k, nil
	}
	done := (<-chan struct{})(v.inflight)
	if done == nil && !v.static && time.Since(v.lastForced) >= v.cfg.RefreshInterval {
		v.lastForced = time.Now()
		done = v.startFetch()
	}
	v.mu.Unlock()
	if done != nil {
		if set, err = v.wait(ctx, done); err != nil {
			return nil, err
		}
		if k, ok := set.LookupKeyID(kid); ok {
			return k, nil
		}
	}
	return nil, unauthorized("token signing key not found in JWKS%s", hint(v.cfg.KeyHint))
}

// keySet returns the key set to verify with:
//   - fresh (younger than CacheLifespan): the cached set, no fetch;
//   - stale, and the issuer answered last time: wait for a fetch (shared
//     by all requests), falling back to the stale set if it fails;
//   - stale, and the last fetch failed: the stale set at once, with a
//     background fetch at most once per RefreshInterval, so requests do not
//     wait on an issuer that is down or hangs;
//   - none yet: wait for a fetch; if it fails, 503, and 503 at once for
//     retryNoKeys before the next try.
func (v *Verifier) keySet(ctx context.Context) (jwk.Set, error) {
	v.mu.Lock()
	now := time.Now()
	set := v.set
	switch {
	case set != nil && now.Before(v.freshUntil):
		v.mu.Unlock()
		return set, nil
	case set != nil && v.failing:
		if !now.Before(v.retryAt) {
			v.startFetch()
		}
		v.mu.Unlock()
		return set, nil
	case set == nil && (v.static || v.failing && now.Before(v.retryAt)):
		v.mu.Unlock()
		return nil, errJWKSUnavailable
	}
	done := v.startFetch()
	v.mu.Unlock()
	return v.wait(ctx, done)
}

// wait waits for the fetch done and returns the key set then cached: the
// new one, or the stale one if the fetch failed.
func (v *Verifier) wait(ctx context.Context, done <-chan struct{}) (jwk.Set, error) {
	select {
	case <-done:
	case <-ctx.Done():
		return nil, store.Errorf(store.CodeUnavailable, "authentication service unavailable: timed out waiting for the signing keys")
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.set == nil {
		return nil, errJWKSUnavailable
	}
	return v.set, nil
}

// startFetch starts a fetch unless one is in flight, and returns the
// channel closed when that fetch has ended and its result is stored. The
// caller holds v.mu. The fetch is not tied to any request: a request that
// gives up does not cancel it for the others (FetchTimeout bounds it).
func (v *Verifier) startFetch() <-chan struct{} {
	if v.inflight != nil {
		return v.inflight
	}
	done := make(chan struct{})
	v.inflight = done
	go func() {
		set, err := v.download(context.Background())
		v.mu.Lock()
		defer close(done) // after the unlock below: waiters then read the result
		defer v.mu.Unlock()
		v.fetches++
		v.inflight = nil
		now := time.Now()
		if err != nil {
			v.log.Warn("JWKS fetch failed", slog.String("url", v.cfg.JWKSURL), slog.Bool("stale_keys_in_use", v.set != nil), slog.Any("error", err))
			v.failing = true
			v.retryAt = now.Add(v.cfg.RefreshInterval)
			if v.set == nil {
				v.retryAt = now.Add(retryNoKeys)
			}
			return
		}
		if v.failing && v.set != nil {
			v.log.Info("JWKS fetch succeeded again", slog.String("url", v.cfg.JWKSURL))
		}
		v.set, v.freshUntil, v.failing = set, now.Add(v.cfg.CacheLifespan), false
	}()
	return done
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
	return v.usableKeys(parsed)
}

// usableKeys keeps the public signing keys of parsed that Evo accepts, the last
// MaxKeys of them.
func (v *Verifier) usableKeys(parsed jwk.Set) (jwk.Set, error) {
	var keys []jwk.Key
	for i := 0; i < parsed.Len(); i++ {
		k, _ := parsed.Key(i)
		if u := k.KeyUsage(); u != "" && u != "sig" {
			continue
		}
		if pub, err := k.PublicKey(); err == nil && pub.KeyID() != "" && allowedAlgs[keyAlg(pub)] {
			keys = append(keys, pub)
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("JWKS holds no usable signing key")
	}
	// Keep the last MaxKeys: Better Auth lists its keys oldest first, and
	// the newest one signs the tokens.
	if n := len(keys) - v.cfg.MaxKeys; n > 0 {
		v.log.Warn("JWKS holds more keys than JWKS_CACHE_MAX_KEYS; the first ones are ignored",
			slog.Int("keys", len(keys)), slog.Int("max", v.cfg.MaxKeys))
		keys = keys[n:]
	}
	set := jwk.NewSet()
	for _, k := range keys {
		set.AddKey(k)
	}
	return set, nil
}

// Fetches returns how many JWKS fetches were made.
func (v *Verifier) Fetches() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.fetches
}

// CheckUser checks that the user still exists, as Verify does for a token's user:
// for callers that hold a user verified earlier (an open socket, a running chat).
// CodeUnauthorized if the user is gone; other errors when the store fails.
func (v *Verifier) CheckUser(ctx context.Context, id string) error {
	return v.checkUser(ctx, id)
}
