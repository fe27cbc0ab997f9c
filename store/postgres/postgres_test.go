package postgres_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/evotodo/evo/store"
	"github.com/evotodo/evo/store/postgres"
	"github.com/evotodo/evo/store/storetest"
)

// pythonSchema is the schema the Python backend's SQLModel create_all left
// behind: naive timestamps, varchar columns, no event log, and a "user"
// table without a unique email (SQLModel's User declares none).
const pythonSchema = `
CREATE TABLE "user" (
	id text PRIMARY KEY,
	email varchar NOT NULL,
	name varchar NOT NULL,
	"emailVerified" boolean NOT NULL,
	image varchar,
	"createdAt" timestamp WITHOUT TIME ZONE NOT NULL,
	"updatedAt" timestamp WITHOUT TIME ZONE NOT NULL
);
CREATE TABLE todos (
	id uuid PRIMARY KEY,
	user_id varchar NOT NULL REFERENCES "user"(id),
	title varchar(500) NOT NULL,
	description varchar(2000),
	is_complete boolean NOT NULL,
	created_at timestamp WITHOUT TIME ZONE NOT NULL,
	updated_at timestamp WITHOUT TIME ZONE NOT NULL
);
CREATE INDEX ix_todos_user_id ON todos (user_id);
CREATE INDEX ix_todos_user_id_created_at ON todos (user_id, created_at);
CREATE TABLE chat_messages (
	id uuid PRIMARY KEY,
	user_id varchar NOT NULL,
	message varchar NOT NULL,
	response varchar NOT NULL,
	created_at timestamp WITHOUT TIME ZONE NOT NULL,
	updated_at timestamp WITHOUT TIME ZONE NOT NULL
);`

// Rows the Python backend wrote, with the naive UTC times it stored.
var (
	pyUserA = store.User{ID: "660e8400-e29b-41d4-a716-446655440001", Email: "ada@example.com", Name: "Ada",
		EmailVerified: true, CreatedAt: day(1, 9), UpdatedAt: day(1, 9)}
	pyUserB = store.User{ID: "770e8400-e29b-41d4-a716-446655440002", Email: "bob@example.com", Name: "Bob",
		Image: ptr("https://img.example/bob.png"), CreatedAt: day(1, 10), UpdatedAt: day(2, 10)}
	pyTodos = []store.Todo{
		{ID: "550e8400-e29b-41d4-a716-446655440000", UserID: pyUserA.ID, Title: "Buy groceries",
			Description: ptr("Milk, eggs, bread"), CreatedAt: day(29, 10), UpdatedAt: day(29, 10)},
		{ID: "550e8400-e29b-41d4-a716-446655440003", UserID: pyUserA.ID, Title: "Ünïcødé ✓ 日本語",
			IsComplete: true, CreatedAt: day(29, 11), UpdatedAt: day(30, 8)},
		{ID: "550e8400-e29b-41d4-a716-446655440004", UserID: pyUserB.ID, Title: "Bob's only todo",
			Description: ptr(""), CreatedAt: day(29, 12), UpdatedAt: day(29, 12)},
	}
	pyChats = []store.ChatMessage{
		{ID: "880e8400-e29b-41d4-a716-446655440005", UserID: pyUserA.ID, Message: "add milk",
			Response: "Added \"milk\".", CreatedAt: day(29, 13), UpdatedAt: day(29, 13)},
		{ID: "880e8400-e29b-41d4-a716-446655440006", UserID: pyUserA.ID, Message: "what is left?",
			Response: "Buy groceries.", CreatedAt: day(29, 14), UpdatedAt: day(29, 14)},
	}
)

// day is a December 2025 time with microseconds, as Python's utcnow() gives.
func day(d, h int) time.Time { return time.Date(2025, 12, d, h, 30, 0, 123456000, time.UTC) }

func ptr[T any](v T) *T { return &v }

// pythonDatabase returns the URL of a fresh database holding pythonSchema
// and the py* rows.
func pythonDatabase(t testing.TB) string {
	t.Helper()
	ctx := context.Background()
	url := storetest.PostgresURL(t)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, pythonSchema); err != nil {
		t.Fatalf("create the Python schema: %v", err)
	}
	// Naive timestamps are written as the text Python sent, so no time
	// zone conversion of the test's own can hide a bug.
	naive := func(tm time.Time) string { return tm.Format("2006-01-02 15:04:05.999999") }
	for _, u := range []store.User{pyUserA, pyUserB} {
		if _, err := conn.Exec(ctx, `INSERT INTO "user" VALUES ($1, $2, $3, $4, $5, $6::text::timestamp, $7::text::timestamp)`,
			u.ID, u.Email, u.Name, u.EmailVerified, u.Image, naive(u.CreatedAt), naive(u.UpdatedAt)); err != nil {
			t.Fatal(err)
		}
	}
	for _, td := range pyTodos {
		if _, err := conn.Exec(ctx, `INSERT INTO todos VALUES ($1, $2, $3, $4, $5, $6::text::timestamp, $7::text::timestamp)`,
			td.ID, td.UserID, td.Title, td.Description, td.IsComplete, naive(td.CreatedAt), naive(td.UpdatedAt)); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range pyChats {
		if _, err := conn.Exec(ctx, `INSERT INTO chat_messages VALUES ($1, $2, $3, $4, $5::text::timestamp, $6::text::timestamp)`,
			m.ID, m.UserID, m.Message, m.Response, naive(m.CreatedAt), naive(m.UpdatedAt)); err != nil {
			t.Fatal(err)
		}
	}
	return url
}

// open opens url and closes it with t.
func open(t *testing.T, url string) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(context.Background(), url, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// recorder is a store.Publisher that keeps what it was given.
type recorder struct {
	mu  sync.Mutex
	evs []store.Event
}

func (r *recorder) PublishEvent(_ context.Context, _ string, ev store.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, ev)
}

func (r *recorder) events() []store.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]store.Event(nil), r.evs...)
}

func TestMigrateAdoptsPythonDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := open(t, pythonDatabase(t))
	if err := db.Migrate(ctx, storetest.Quiet()); err != nil {
		t.Fatalf("Migrate on the Python database: %v", err)
	}

	t.Run("OldUsersAreReadable", func(t *testing.T) {
		for _, want := range []store.User{pyUserA, pyUserB} {
			got, err := db.GetUser(ctx, want.ID)
			if err != nil {
				t.Fatalf("GetUser(%s): %v", want.ID, err)
			}
			if !equalJSON(got, want) {
				t.Errorf("GetUser(%s): got %s, want %s", want.ID, jsonOf(got), jsonOf(want))
			}
		}
	})

	t.Run("OldTodosAreListedNewestFirst", func(t *testing.T) {
		tests := []struct {
			name      string
			user      string
			filter    store.TodoFilter
			want      []store.Todo
			wantTotal int
		}{
			{"UserAAll", pyUserA.ID, store.TodoFilter{Limit: 100}, []store.Todo{pyTodos[1], pyTodos[0]}, 2},
			{"UserAComplete", pyUserA.ID, store.TodoFilter{Limit: 100, IsComplete: ptr(true)}, []store.Todo{pyTodos[1]}, 1},
			{"UserAOpen", pyUserA.ID, store.TodoFilter{Limit: 100, IsComplete: ptr(false)}, []store.Todo{pyTodos[0]}, 1},
			{"UserASecondPage", pyUserA.ID, store.TodoFilter{Skip: 1, Limit: 1}, []store.Todo{pyTodos[0]}, 2},
			{"UserB", pyUserB.ID, store.TodoFilter{Limit: 100}, []store.Todo{pyTodos[2]}, 1},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, total, err := db.ListTodos(ctx, tt.user, tt.filter)
				if err != nil {
					t.Fatal(err)
				}
				if total != tt.wantTotal || !equalJSON(got, tt.want) {
					t.Errorf("got %d %s, want %d %s", total, jsonOf(got), tt.wantTotal, jsonOf(tt.want))
				}
			})
		}
	})

	t.Run("OldTodosAreReadableOneByOne", func(t *testing.T) {
		for _, want := range pyTodos {
			got, err := db.GetTodo(ctx, want.UserID, want.ID)
			if err != nil {
				t.Fatalf("GetTodo(%s): %v", want.ID, err)
			}
			if !equalJSON(got, want) {
				t.Errorf("GetTodo(%s): got %s, want %s", want.ID, jsonOf(got), jsonOf(want))
			}
		}
	})

	t.Run("OldTodosStayIsolated", func(t *testing.T) {
		_, err := db.GetTodo(ctx, pyUserB.ID, pyTodos[0].ID)
		if got, want := store.ErrorCode(err), store.CodeNotFound; got != want {
			t.Errorf("user B reads user A's todo: got %v, want %s", err, want)
		}
	})

	t.Run("OldChatMessagesAreReadable", func(t *testing.T) {
		got, err := db.ListChatMessages(ctx, pyUserA.ID, time.Time{}, 10)
		if err != nil {
			t.Fatal(err)
		}
		want := []store.ChatMessage{pyChats[1], pyChats[0]}
		for i := range want {
			want[i].ToolCalls = json.RawMessage("[]")
			want[i].Status = "completed"
		}
		if !equalJSON(got, want) {
			t.Errorf("got %s, want %s", jsonOf(got), jsonOf(want))
		}
		older, err := db.ListChatMessages(ctx, pyUserA.ID, pyChats[1].CreatedAt, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(older) != 1 || older[0].ID != pyChats[0].ID {
			t.Errorf("before the newest: got %s, want only %s", jsonOf(older), pyChats[0].ID)
		}
	})

	t.Run("NewChatMessagesAreStored", func(t *testing.T) {
		m, err := db.CreateChatMessage(ctx, store.ChatMessage{UserID: pyUserB.ID, Message: "hi", Response: "hello",
			ToolCalls: json.RawMessage(`[{"name":"list_todos"}]`)})
		if err != nil {
			t.Fatal(err)
		}
		got, err := db.ListChatMessages(ctx, pyUserB.ID, time.Time{}, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].ID != m.ID || !bytes.Equal(compact(got[0].ToolCalls), compact(m.ToolCalls)) {
			t.Errorf("got %s, want [%s]", jsonOf(got), jsonOf(m))
		}
	})

	t.Run("ChangesProduceEvents", func(t *testing.T) {
		rec := &recorder{}
		todos := store.NewTodos(db, rec)
		user := pyUserA.ID

		created, err := todos.Create(ctx, user, store.TodoCreate{Title: "New after adoption"})
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		updated, err := todos.Update(ctx, user, pyTodos[0].ID, store.TodoUpdate{IsComplete: ptr(true)})
		if err != nil {
			t.Fatalf("update an old todo: %v", err)
		}
		deleted, err := todos.Delete(ctx, user, pyTodos[1].ID)
		if err != nil {
			t.Fatalf("delete an old todo: %v", err)
		}

		if updated.Title != pyTodos[0].Title || !updated.IsComplete || !updated.CreatedAt.Equal(pyTodos[0].CreatedAt) {
			t.Errorf("updated old todo: got %s, want %s completed", jsonOf(updated), jsonOf(pyTodos[0]))
		}
		wantEvents := []struct {
			typ  string
			seq  int64
			todo string
		}{
			{store.EventTodoCreated, 1, created.ID},
			{store.EventTodoUpdated, 2, updated.ID},
			{store.EventTodoDeleted, 3, deleted.ID},
		}
		stored, err := db.EventsSince(ctx, user, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		for name, got := range map[string][]store.Event{"published": rec.events(), "stored": stored} {
			if len(got) != len(wantEvents) {
				t.Fatalf("%s events: got %s, want %d", name, jsonOf(got), len(wantEvents))
			}
			for i, w := range wantEvents {
				if got[i].Type != w.typ || got[i].Seq != w.seq || got[i].Todo.ID != w.todo {
					t.Errorf("%s event %d: got %s %d %s, want %s %d %s", name, i, got[i].Type, got[i].Seq, got[i].Todo.ID, w.typ, w.seq, w.todo)
				}
			}
		}
		if seq, err := db.LastSeq(ctx, user); err != nil || seq != 3 {
			t.Errorf("LastSeq: got %d, %v; want 3", seq, err)
		}

		list, total, err := db.ListTodos(ctx, user, store.TodoFilter{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		if total != 2 || len(list) != 2 || list[0].ID != created.ID || list[1].ID != pyTodos[0].ID {
			t.Errorf("list after changes: got %d %s, want [new, %s]", total, jsonOf(list), pyTodos[0].ID)
		}
		if _, total, _ := db.ListTodos(ctx, pyUserB.ID, store.TodoFilter{Limit: 100}); total != 1 {
			t.Errorf("user B's list after user A's changes: got total %d, want 1", total)
		}
	})

	t.Run("DevIssuerFindsOldUserByEmail", func(t *testing.T) {
		got, err := db.EnsureUser(ctx, pyUserB.Email, "Someone else")
		if err != nil {
			t.Fatalf("EnsureUser(%s): %v", pyUserB.Email, err)
		}
		if got.ID != pyUserB.ID {
			t.Errorf("EnsureUser(%s): got id %s, want %s", pyUserB.Email, got.ID, pyUserB.ID)
		}
		fresh, err := db.EnsureUser(ctx, "new@example.com", "New")
		if err != nil {
			t.Fatalf("EnsureUser(new): %v", err)
		}
		again, err := db.EnsureUser(ctx, "new@example.com", "New")
		if err != nil || again.ID != fresh.ID {
			t.Errorf("EnsureUser(new) twice: got %s, %v; want %s", again.ID, err, fresh.ID)
		}
	})
}

func TestMigrateTwiceIsNoOp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		url  func(testing.TB) string
	}{
		{"FreshDatabase", storetest.PostgresURL},
		{"PythonDatabase", pythonDatabase},
	} {
		t.Run(tt.name, func(t *testing.T) {
			db := open(t, tt.url(t))
			if err := db.Migrate(ctx, storetest.Quiet()); err != nil {
				t.Fatalf("first Migrate: %v", err)
			}
			u := storetest.User(t, db)
			todo, err := store.NewTodos(db, nil).Create(ctx, u.ID, store.TodoCreate{Title: "survives"})
			if err != nil {
				t.Fatal(err)
			}
			before := schema(t, db)

			var logs bytes.Buffer
			if err := db.Migrate(ctx, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
				t.Fatalf("second Migrate: %v", err)
			}
			if strings.Contains(logs.String(), "migration applied") {
				t.Errorf("second Migrate applied migrations: %s", logs.String())
			}
			if got := schema(t, db); got != before {
				t.Errorf("schema changed:\ngot  %s\nwant %s", got, before)
			}
			got, err := db.GetTodo(ctx, u.ID, todo.ID)
			if err != nil || !equalJSON(got, todo) {
				t.Errorf("todo after second Migrate: got %s, %v; want %s", jsonOf(got), err, jsonOf(todo))
			}
			if seq, err := db.LastSeq(ctx, u.ID); err != nil || seq != 1 {
				t.Errorf("LastSeq after second Migrate: got %d, %v; want 1", seq, err)
			}
		})
	}
}

func TestConcurrentMigrateBothSucceed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := storetest.PostgresURL(t)
	dbs := []*postgres.DB{open(t, url), open(t, url), open(t, url)}
	errs := make([]error, len(dbs))
	var wg sync.WaitGroup
	for i, db := range dbs {
		wg.Go(func() { errs[i] = db.Migrate(ctx, storetest.Quiet()) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Migrate %d: %v", i, err)
		}
	}
	var applied int
	if err := dbs[0].Pool().QueryRow(ctx, `SELECT count(*) FROM goose_db_version WHERE version_id > 0`).Scan(&applied); err != nil {
		t.Fatal(err)
	}
	if want := migrationCount(t); applied != want {
		t.Errorf("applied migrations: got %d rows, want %d (each once)", applied, want)
	}
	u := storetest.User(t, dbs[1])
	if _, err := store.NewTodos(dbs[2], nil).Create(ctx, u.ID, store.TodoCreate{Title: "works"}); err != nil {
		t.Errorf("create after concurrent migrations: %v", err)
	}
}

// migrationCount is the number of PostgreSQL migrations shipped, as a
// freshly migrated database records them.
func migrationCount(t *testing.T) int {
	t.Helper()
	db := storetest.Postgres(t)
	var n int
	if err := db.Pool().QueryRow(context.Background(), `SELECT count(*) FROM goose_db_version WHERE version_id > 0`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// schema describes the public tables, columns and indexes of db.
func schema(t *testing.T, db *postgres.DB) string {
	t.Helper()
	var s string
	err := db.Pool().QueryRow(context.Background(), `
		SELECT string_agg(d, '; ' ORDER BY d) FROM (
			SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '') AS d
			FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> 'goose_db_version'
			UNION ALL
			SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'
		) x`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func jsonOf(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// equalJSON compares values as a client reads them: by their JSON.
func equalJSON(got, want any) bool { return jsonOf(got) == jsonOf(want) }

func compact(b []byte) []byte {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return b
	}
	return buf.Bytes()
}
