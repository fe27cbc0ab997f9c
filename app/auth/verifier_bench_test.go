package auth

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/evotodo/evo/store"
	"github.com/evotodo/evo/store/storetest"
)

// knownUsers is a Users that knows one user, without a database: it isolates the
// verifier's own cost (parse, key lookup, signature, claims) from the user lookup.
type knownUsers struct{ u store.User }

func (k knownUsers) ExistingUsers(_ context.Context, ids []string) ([]string, error) {
	if slices.Contains(ids, k.u.ID) {
		return []string{k.u.ID}, nil
	}
	return nil, nil
}

// BenchmarkVerify verifies an EdDSA token with a warm key cache (the JWKS was fetched
// before the timer starts). "no-db" answers the user lookup from memory; "sqlite" and
// "postgres" make it on a real store, as every REST request does.
func BenchmarkVerify(b *testing.B) {
	cases := []struct {
		name  string
		users func(b *testing.B) Users
	}{
		{"no-db", func(*testing.B) Users {
			return knownUsers{store.User{ID: "NLPE26C4WGK5ZRBV4TQCRXSUD7YP2Z35", Email: "a@example.com", Name: "a"}}
		}},
		{"sqlite", func(b *testing.B) Users { return storetest.SQLite(b) }},
		{"postgres", func(b *testing.B) Users { return storetest.Postgres(b) }},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			fi := newFakeIssuer(b)
			users := tc.users(b)
			var u store.User
			switch us := users.(type) {
			case knownUsers:
				u = us.u
			case store.DB:
				u = storetest.User(b, us)
			}
			v := NewVerifier(Config{JWKSURL: fi.URL + "/api/auth/jwks", Issuer: fi.URL, Audience: fi.URL}, users, storetest.Quiet())
			tok, err := fi.iss.Token(u, 15*time.Minute)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			if _, err := v.Verify(ctx, tok); err != nil { // warms the key cache
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
			if n := v.Fetches(); n != 1 {
				b.Fatalf("%d JWKS fetches, want 1 (the cache was not warm)", n)
			}
		})
	}
}
