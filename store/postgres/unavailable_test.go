package postgres_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/evotodo/evo/store"
	"github.com/evotodo/evo/store/postgres"
	"github.com/evotodo/evo/store/storetest"
)

// TestServerGoneMidQueryIsUnavailable: a pooled connection whose server
// process went away (PostgreSQL stopped, crashed or restarted; here its
// backend is terminated) fails the next query with unexpected EOF or SQLSTATE
// 57P01. That is the database being unavailable (503), not an internal
// error (500). Found by the chaos test (make chaos), which stops PostgreSQL
// under load: before the fix, requests caught mid-query answered 500.
func TestServerGoneMidQueryIsUnavailable(t *testing.T) {
	ctx := context.Background()
	url := storetest.PostgresURL(t)
	db, err := postgres.Open(ctx, url, 1) // one connection: the next query uses it
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Migrate(ctx, storetest.Quiet()); err != nil {
		t.Fatal(err)
	}
	u := storetest.User(t, db)
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)

	for _, op := range []struct {
		name string
		run  func() error
	}{
		{"GetUser", func() error { _, err := db.GetUser(ctx, u.ID); return err }},
		{"CreateTodo", func() error { _, err := db.CreateTodo(ctx, u.ID, store.TodoCreate{Title: "x"}); return err }},
		{"ListTodos", func() error { _, _, err := db.ListTodos(ctx, u.ID, store.TodoFilter{Limit: 10}); return err }},
		{"LastSeq", func() error { _, err := db.LastSeq(ctx, u.ID); return err }},
	} {
		t.Run(op.name, func(t *testing.T) {
			var pid int
			if err := db.Pool().QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				t.Fatal(err)
			}
			if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
				t.Fatal(err)
			}
			err := op.run()
			if err == nil {
				t.Skip("the pool noticed the dead connection before the query") // nothing to classify
			}
			if code := store.ErrorCode(err); code != store.CodeUnavailable {
				t.Fatalf("got %v (code %s), want code %s", err, code, store.CodeUnavailable)
			}
		})
	}
}
