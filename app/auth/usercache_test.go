package auth

import (
	"context"
	"fmt"
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

func (c *countingUsers) ExistingUsers(ctx context.Context, ids []string) ([]string, error) {
	c.lookups.Add(1)
	if h := c.hold.Load(); h != nil {
		<-*h
	}
	return c.DB.ExistingUsers(ctx, ids)
}

// TestVerifierUserCache: a user's token used again and again costs one user lookup on
// the request path, then two a second in the background, not one per request; once
// the user row is deleted, the token is refused
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
	// Each replica looks the user up once, and again in the background twice a TTL.
	if n, most := users.lookups.Load(), 2*(1+int64(2*time.Since(start)/UserCacheTTL)); n > most {
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

// TestVerifierUserCacheRefreshedInBackground: a user who made a request is looked up
// again in the background before the cache entry expires, so a later request does not
// wait for the database (here: it hangs by then, and the request still passes).
func TestVerifierUserCacheRefreshedInBackground(t *testing.T) {
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
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatal(err)
	}
	// Longer than the entry the request made lives: refreshes kept it fresh.
	time.Sleep(UserCacheTTL * 5 / 2)
	if n := users.lookups.Load(); n < 3 {
		t.Fatalf("%d user lookups in %v, want the request's and the background's (2 a second)", n, UserCacheTTL*5/2)
	}
	hold := make(chan struct{})
	users.hold.Store(&hold)
	defer close(hold)
	errc := make(chan error, 1)
	go func() { _, err := v.Verify(ctx, tok); errc <- err }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(UserCacheTTL / 4):
		t.Fatal("Verify waited for the user lookup")
	}
}

// TestVerifierRefreshUsers: one background refresh asks for every known user in one
// query per usersPerLookup, keeps those that exist, forgets those that do not and those
// not used within userKeepWarm, and reports when none is left.
func TestVerifierRefreshUsers(t *testing.T) {
	users := &countingUsers{DB: storetest.Postgres(t)}
	v := NewVerifier(Config{JWKSURL: "http://127.0.0.1:1/jwks"}, users, storetest.Quiet())
	now := time.Now()
	real := []string{storetest.User(t, users).ID, storetest.User(t, users).ID, storetest.User(t, users).ID}
	idle := storetest.User(t, users).ID
	v.known = map[string]knownUser{idle: {until: now.Add(UserCacheTTL), used: now.Add(-userKeepWarm - time.Second)}}
	for _, id := range real {
		v.known[id] = knownUser{until: now.Add(UserCacheTTL / 10), used: now}
	}
	for i := range 2*usersPerLookup + 500 {
		v.known[fmt.Sprintf("GONE%028d", i)] = knownUser{until: now.Add(UserCacheTTL), used: now}
	}
	before := time.Now()
	if !v.refreshUsers() {
		t.Fatal("refreshUsers reported no user left")
	}
	if n := users.lookups.Load(); n != 3 {
		t.Errorf("%d users refreshed in %d queries, want 3", 2*usersPerLookup+503, n)
	}
	if len(v.known) != len(real) {
		t.Errorf("%d users left in the cache, want the %d that exist and were used", len(v.known), len(real))
	}
	for _, id := range real {
		if e := v.known[id]; e.until.Before(before.Add(UserCacheTTL)) || e.until.After(time.Now().Add(UserCacheTTL)) {
			t.Errorf("user %s trusted until %v, want %v from its lookup (between %v and now)", id, e.until, UserCacheTTL, before)
		}
	}
	for _, id := range real {
		v.known[id] = knownUser{until: now.Add(UserCacheTTL), used: now.Add(-userKeepWarm - time.Second)}
	}
	if v.refreshUsers() || len(v.known) != 0 {
		t.Errorf("all users idle for over %v: %d left, want none and the loop ended", userKeepWarm, len(v.known))
	}
}

// TestVerifierRefreshAfterForget: a user forgotten (ForgetUser) while a background
// refresh that finds it is in flight stays forgotten.
func TestVerifierRefreshAfterForget(t *testing.T) {
	users := &countingUsers{DB: storetest.Postgres(t)}
	v := NewVerifier(Config{JWKSURL: "http://127.0.0.1:1/jwks"}, users, storetest.Quiet())
	id := storetest.User(t, users).ID
	v.known = map[string]knownUser{id: {until: time.Now().Add(UserCacheTTL), used: time.Now()}}
	hold := make(chan struct{})
	users.hold.Store(&hold)
	done := make(chan bool)
	go func() { done <- v.refreshUsers() }()
	for users.lookups.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	v.ForgetUser(id)
	users.hold.Store(nil)
	close(hold)
	<-done
	v.kmu.Lock()
	defer v.kmu.Unlock()
	if _, ok := v.known[id]; ok {
		t.Fatal("the refresh brought back a user ForgetUser dropped")
	}
}
