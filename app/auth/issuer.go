package auth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/evotodo/evo/store"
)

// Issuer signs tokens shaped like Better Auth's: EdDSA with a kid, iss and
// aud equal to its URL (aud a string), sub the user id, and the user's
// fields. It is the development issuer, and the test suites' stand-in for
// Better Auth.
type Issuer struct {
	URL string
	key jwk.Key
}

// NewIssuer returns an issuer for url with a fresh Ed25519 key.
func NewIssuer(url string) (*Issuer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return newIssuer(url, priv)
}

// LoadIssuer returns the issuer for url whose key is kept in the file at
// path, creating the key (mode 0600) when the file does not exist.
func LoadIssuer(url, path string) (*Issuer, error) {
	if err := createSeed(path); err != nil {
		return nil, fmt.Errorf("dev signing key: %w", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dev signing key: %w", err)
	}
	if len(data) != ed25519.SeedSize {
		return nil, fmt.Errorf("dev signing key %s: want a %d-byte Ed25519 seed, got %d bytes", path, ed25519.SeedSize, len(data))
	}
	return newIssuer(url, ed25519.NewKeyFromSeed(data))
}

// createSeed writes a new Ed25519 seed to path unless the file exists. The
// seed is written to a temporary file first and linked into place, which
// fails if path exists: processes starting together (replicas sharing
// DATA_DIR) all end up reading the one complete key.
func createSeed(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".dev-signing-key-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err == nil {
		_, err = f.Write(priv.Seed())
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Link(f.Name(), path); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return nil
}

func newIssuer(url string, priv ed25519.PrivateKey) (*Issuer, error) {
	key, err := jwk.FromRaw(priv)
	if err != nil {
		return nil, err
	}
	pub, _ := key.PublicKey()
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, err
	}
	kid := fmt.Sprintf("%x", tp)[:32]
	for _, k := range []jwk.Key{key} {
		k.Set(jwk.KeyIDKey, kid)
		k.Set(jwk.AlgorithmKey, jwa.EdDSA)
	}
	return &Issuer{URL: url, key: key}, nil
}

// KeyID returns the kid of the signing key.
func (i *Issuer) KeyID() string { return i.key.KeyID() }

// KeySet returns the public key set.
func (i *Issuer) KeySet() jwk.Set {
	pub, _ := i.key.PublicKey()
	set := jwk.NewSet()
	set.AddKey(pub)
	return set
}

// JWKS returns the public key set, as Better Auth serves it.
func (i *Issuer) JWKS() []byte {
	data, _ := json.Marshal(i.KeySet())
	return data
}

// Token returns a token for u valid for ttl.
func (i *Issuer) Token(u store.User, ttl time.Duration) (string, error) {
	now := time.Now()
	claims := map[string]any{
		"id": u.ID, "name": u.Name, "email": u.Email, "emailVerified": u.EmailVerified, "image": u.Image,
		"createdAt": u.CreatedAt.Format(time.RFC3339Nano), "updatedAt": u.UpdatedAt.Format(time.RFC3339Nano),
		"sub": u.ID, "iat": now.Unix(), "exp": now.Add(ttl).Unix(), "iss": i.URL, "aud": i.URL,
	}
	return i.Sign(claims)
}

// Sign signs arbitrary claims with the issuer's key (EdDSA, with its kid).
func (i *Issuer) Sign(claims map[string]any) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	hdr := jws.NewHeaders()
	hdr.Set(jws.KeyIDKey, i.key.KeyID())
	tok, err := jws.Sign(payload, jws.WithKey(jwa.EdDSA, i.key, jws.WithProtectedHeaders(hdr)))
	return string(tok), err
}
