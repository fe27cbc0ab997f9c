package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/evotodo/evo/app/auth"
	"github.com/evotodo/evo/store"
	"github.com/evotodo/evo/store/postgres"
)

// benchUser is a user of the run with a token the replicas accept.
type benchUser struct {
	ID    string
	Token string
}

// setup holds the database and the dev issuer the users and tokens come from: the same
// DATABASE_URL, and the key in DATA_DIR with iss = aud = PUBLIC_URL, as the replicas.
type setup struct {
	db     *postgres.DB
	issuer *auth.Issuer

	mu    sync.Mutex
	cache map[string]benchUser // by email
}

func newSetup(ctx context.Context, databaseURL, dataDir, publicURL string) (*setup, error) {
	db, err := postgres.Open(ctx, databaseURL, 16)
	if err != nil {
		return nil, fmt.Errorf("-database-url: %w", err)
	}
	iss, err := auth.LoadIssuer(publicURL, filepath.Join(dataDir, "dev-signing-key"))
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("-data-dir: %w", err)
	}
	return &setup{db: db, issuer: iss, cache: map[string]benchUser{}}, nil
}

func (s *setup) Close() { s.db.Close() }

// users returns n users named prefix-00000.. (created with store.EnsureUser if missing)
// with tokens valid for ttl.
func (s *setup) users(ctx context.Context, prefix string, n int, ttl time.Duration) ([]benchUser, error) {
	out := make([]benchUser, n)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range n {
		email := fmt.Sprintf("%s-%05d@bench.evo.test", prefix, i)
		g.Go(func() error {
			s.mu.Lock()
			bu, ok := s.cache[email]
			s.mu.Unlock()
			if ok {
				out[i] = bu
				return nil
			}
			u, err := s.db.EnsureUser(ctx, email, fmt.Sprintf("%s %d", prefix, i))
			if err != nil {
				return fmt.Errorf("ensure user %s: %w", email, err)
			}
			tok, err := s.issuer.Token(u, ttl)
			if err != nil {
				return err
			}
			out[i] = benchUser{ID: u.ID, Token: tok}
			s.mu.Lock()
			s.cache[email] = out[i]
			s.mu.Unlock()
			return nil
		})
	}
	return out, g.Wait()
}

// seedTodos gives each user exactly n todos (plain rows, no events: a REST list
// fixture), replacing those earlier phases added.
func (s *setup) seedTodos(ctx context.Context, users []benchUser, n int) error {
	for _, u := range users {
		_, err := s.db.Pool().Exec(ctx, `
			WITH gone AS (DELETE FROM todos WHERE user_id = $1)
			INSERT INTO todos (id, user_id, title, description, is_complete, created_at, updated_at)
			SELECT gen_random_uuid(), $1, 'seed todo ' || g, 'a description', g % 3 = 0,
				now() - g * interval '1 second', now() - g * interval '1 second'
			FROM generate_series(1, $2) AS g`, u.ID, n)
		if err != nil {
			return fmt.Errorf("seed todos: %w", err)
		}
	}
	// The todos earlier phases added (pgbench's and Evo's creates) are dead rows now:
	// the lists must not step over them in the index.
	if _, err := s.db.Pool().Exec(ctx, `VACUUM ANALYZE todos`); err != nil {
		return fmt.Errorf("vacuum todos: %w", err)
	}
	return nil
}

// restUserID is the id of REST user i: deterministic, so that the pgbench scripts can
// name the same users ('BENCHREST' || lpad(i, 23, '0'), 32 characters like a real id).
func restUserID(i int) string { return fmt.Sprintf("BENCHREST%023d", i) }

// restUsers returns n users with deterministic ids (see restUserID), inserting the
// missing ones, with tokens valid for ttl.
func (s *setup) restUsers(ctx context.Context, n int, ttl time.Duration) ([]benchUser, error) {
	if err := insertRESTUsers(ctx, s.db, n); err != nil {
		return nil, err
	}
	out := make([]benchUser, n)
	for i := range n {
		tok, err := s.issuer.Token(restUser(i), ttl)
		if err != nil {
			return nil, err
		}
		out[i] = benchUser{ID: restUserID(i + 1), Token: tok}
	}
	return out, nil
}

// restUser is REST user i (from 0).
func restUser(i int) store.User {
	return store.User{ID: restUserID(i + 1), Email: fmt.Sprintf("rest-%05d@bench.evo.test", i+1), Name: fmt.Sprintf("rest %d", i+1)}
}

// insertRESTUsers inserts the first n REST users where missing.
func insertRESTUsers(ctx context.Context, db *postgres.DB, n int) error {
	for i := range n {
		u := restUser(i)
		_, err := db.Pool().Exec(ctx, `
			INSERT INTO "user" (id, email, name, "emailVerified", "createdAt", "updatedAt")
			VALUES ($1, $2, $3, false, now(), now()) ON CONFLICT DO NOTHING`, u.ID, u.Email, u.Name)
		if err != nil {
			return fmt.Errorf("insert REST user: %w", err)
		}
	}
	return nil
}

// pgbenchUsers readies databaseURL for -pgbench-alongside without an Evo running on it
// (-target centrifugo): Evo's schema, and the REST users the pgbench scripts name.
func pgbenchUsers(ctx context.Context, databaseURL string, n int) error {
	db, err := postgres.Open(ctx, databaseURL, 2)
	if err != nil {
		return fmt.Errorf("-database-url: %w", err)
	}
	defer db.Close()
	if err := db.Migrate(ctx, slog.New(slog.DiscardHandler)); err != nil {
		return err
	}
	return insertRESTUsers(ctx, db, n)
}
