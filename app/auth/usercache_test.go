package auth

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/evotodo/evo/store"
	"github.com/evotodo/evo/store/postgres"
	"github.com/evotodo/evo/store/storetest"
)

// countingUsers is the real PostgreSQL store, counting the verifier's user lookups.
// While hold is set, lookups wait for it to be closed: a database that does not answer.
type countingUsers struct {
	*postgres.DB
	lookups atomic.Int64
	hold    atomic.Pointer[chan struct{}]
}

func (c *countingUsers) UserExists(ctx context.Context, id string) (bool, error) {
	c.lookups.Add(1)
	if h := c.hold.Load(); h != nil {
		<-*h
	}
	return c.DB.UserExists(ctx, id)
}

// TestVerifierUserCache: a user's token used again and again costs one user lookup per
// UserCacheTTL, not one per request; once the user row is deleted, the token is refused
// after UserCacheTTL at the latest (here: two verifiers, as two replicas would be), and
// at once after ForgetUser.
func TestVerifierUserCache(t *testing.T) {
	ctx := context.Background()
	fi := newFakeIssuer(t)
	users := &countingUsers{DB: storetest.Postgres(t)}
	cfg := Config{JWKSURL: fi.URL + "/api/auth/jwks", Issuer: fi.URL, Audience: fi.URL}
	replicas := []*Verifier{NewVerifier(cfg, users, storetest.Quiet()), NewVerifier(cfg, users, storetest.Quiet())}
	u := storetest.User(t, users)
	tok, err := fi.iss.Token(u, 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for range 50 {
		for _, v := range replicas {
			if _, err := v.Verify(ctx, tok); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Each replica looks the user up once, and again only after a TTL has passed.
	if n, most := users.lookups.Load(), 2*(1+int64(time.Since(start)/UserCacheTTL)); n > most {
		t.Fatalf("100 verifications made %d user lookups, want at most %d", n, most)
	}

	if _, err := users.Pool().Exec(ctx, `DELETE FROM "user" WHERE id = $1`, u.ID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(UserCacheTTL + 10*time.Millisecond)
	for i, v := range replicas {
		_, err := v.Verify(ctx, tok)
		if got := store.ErrorCode(err); got != store.CodeUnauthorized || store.ErrorMessage(err) != "token user does not exist" {
			t.Fatalf("replica %d, %v after the user was deleted: %v, want 401 token user does not exist", i, UserCacheTTL, err)
		}
	}

	// ForgetUser: refused at once, without waiting for the TTL.
	u2 := storetest.User(t, users)
	tok2, err := fi.iss.Token(u2, 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := replicas[0].Verify(ctx, tok2); err != nil {
		t.Fatal(err)
	}
	if _, err := users.Pool().Exec(ctx, `DELETE FROM "user" WHERE id = $1`, u2.ID); err != nil {
		t.Fatal(err)
	}
	replicas[0].ForgetUser(u2.ID)
	if _, err := replicas[0].Verify(ctx, tok2); store.ErrorCode(err) != store.CodeUnauthorized {
		t.Fatalf("after ForgetUser: %v, want 401", err)
	}
}

// TestVerifierUserCacheRefreshesAhead: a user who keeps making requests is looked up
// again in the background before the cache entry expires, so no request waits for the
// lookup (here: the lookups hang, and the requests still pass), and the refreshed entry
// outlives the first one.
func TestVerifierUserCacheRefreshesAhead(t *testing.T) {
	ctx := context.Background()
	fi := newFakeIssuer(t)
	users := &countingUsers{DB: storetest.Postgres(t)}
	cfg := Config{JWKSURL: fi.URL + "/api/auth/jwks", Issuer: fi.URL, Audience: fi.URL}
	v := NewVerifier(cfg, users, storetest.Quiet())
	u := storetest.User(t, users)
	tok, err := fi.iss.Token(u, 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// verify fails the test if Verify waits for the held lookup.
	verify := func(what string) {
		t.Helper()
		errc := make(chan error, 1)
		go func() { _, err := v.Verify(ctx, tok); errc <- err }()
		select {
		case err := <-errc:
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		case <-time.After(UserCacheTTL / 4):
			t.Fatalf("%s: Verify waited for the user lookup", what)
		}
	}
	first := time.Now()
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatal(err)
	}
	hold := make(chan struct{})
	users.hold.Store(&hold)
	time.Sleep(time.Until(first.Add(UserCacheTTL * 6 / 10)))
	verify("past half the entry's life, the database hanging")
	for users.lookups.Load() != 2 { // the background lookup
		if time.Since(first) > UserCacheTTL {
			t.Fatalf("%d lookups by the time the entry expired, want 2", users.lookups.Load())
		}
		time.Sleep(time.Millisecond)
	}
	users.hold.Store(nil)
	close(hold) // the refresh answers: the user exists
	time.Sleep(time.Until(first.Add(UserCacheTTL * 11 / 10)))
	// The first entry has expired; the refreshed one, from its lookup (at 0.6 TTL or
	// later), has not.
	if time.Since(first) >= UserCacheTTL*3/2 {
		t.Skip("the machine was too slow for this timing")
	}
	hold2 := make(chan struct{})
	users.hold.Store(&hold2)
	defer close(hold2)
	verify("after the first entry expired")
}
