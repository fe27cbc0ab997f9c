// Package sqlite implements store.DB on an embedded SQLite file
// (modernc.org/sqlite, pure Go): the zero-configuration default.
package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	_ "modernc.org/sqlite" // database/sql driver "sqlite"

	"github.com/evotodo/evo/migrations"
	"github.com/evotodo/evo/store"
)

// DB is a SQLite-backed store.DB.
type DB struct {
	db *sql.DB
}

var _ store.DB = (*DB)(nil)

// Open opens (creating if needed) the database file at path. Writers queue
// on SQLite's lock (busy timeout 10 s): the server and a `token` command can
// share the file.
func Open(ctx context.Context, path string) (*DB, error) {
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open SQLite %s: %w", path, err)
	}
	// One connection: SQLite has one writer anyway, and this keeps every
	// transaction of this process strictly serialized.
	db.SetMaxOpenConns(1)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open SQLite %s: %w", path, err)
	}
	return &DB{db: db}, nil
}

// Migrate applies the pending migrations.
func (db *DB) Migrate(ctx context.Context, log *slog.Logger) error {
	return migrations.Up(ctx, db.db, migrations.SQLite, log)
}

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error { return wrap("ping", db.db.PingContext(ctx)) }

// Close closes the database.
func (db *DB) Close() error { return db.db.Close() }

const userCols = `id, email, name, "emailVerified", image, "createdAt", "updatedAt"`

func scanUser(row interface{ Scan(...any) error }) (store.User, error) {
	var u store.User
	err := row.Scan(&u.ID, &u.Email, &u.Name, &u.EmailVerified, &u.Image, &u.CreatedAt, &u.UpdatedAt)
	u.CreatedAt, u.UpdatedAt = u.CreatedAt.UTC(), u.UpdatedAt.UTC()
	return u, err
}

// GetUser returns the user; CodeNotFound if there is none.
func (db *DB) GetUser(ctx context.Context, id string) (store.User, error) {
	u, err := scanUser(db.db.QueryRowContext(ctx, `SELECT `+userCols+` FROM "user" WHERE id = ?`, id))
	return u, wrap("get user", err)
}

// ExistingUsers returns those of ids that are users.
func (db *DB) ExistingUsers(ctx context.Context, ids []string) ([]string, error) {
	list, err := json.Marshal(ids)
	if err != nil {
		return nil, fmt.Errorf("get users: %w", err)
	}
	rows, err := db.db.QueryContext(ctx, `SELECT id FROM "user" WHERE id IN (SELECT value FROM json_each(?))`, string(list))
	if err != nil {
		return nil, wrap("get users", err)
	}
	defer rows.Close()
	var found []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, wrap("get users", err)
		}
		found = append(found, id)
	}
	return found, wrap("get users", rows.Err())
}

// EnsureUser returns the user with this email, creating it if missing.
func (db *DB) EnsureUser(ctx context.Context, email, name string) (store.User, error) {
	now := store.Now()
	u, err := scanUser(db.db.QueryRowContext(ctx, `
		INSERT INTO "user" (id, email, name, "emailVerified", "createdAt", "updatedAt")
		VALUES (?, ?, ?, false, ?, ?)
		ON CONFLICT (email) DO UPDATE SET email = excluded.email
		RETURNING `+userCols, store.NewUserID(), email, name, now, now))
	return u, wrap("ensure user", err)
}

const todoCols = `id, user_id, title, description, is_complete, created_at, updated_at`

func scanTodo(row interface{ Scan(...any) error }) (store.Todo, error) {
	var t store.Todo
	err := row.Scan(&t.ID, &t.UserID, &t.Title, &t.Description, &t.IsComplete, &t.CreatedAt, &t.UpdatedAt)
	t.CreatedAt, t.UpdatedAt = t.CreatedAt.UTC(), t.UpdatedAt.UTC()
	return t, err
}

// ListTodos returns a page of the user's todos, newest first, and the total.
func (db *DB) ListTodos(ctx context.Context, userID string, f store.TodoFilter) ([]store.Todo, int, error) {
	where := `user_id = ?`
	args := []any{userID}
	if f.IsComplete != nil {
		where += ` AND is_complete = ?`
		args = append(args, *f.IsComplete)
	}
	var total int
	if err := db.db.QueryRowContext(ctx, `SELECT count(*) FROM todos WHERE `+where, args...).Scan(&total); err != nil {
		return nil, 0, wrap("count todos", err)
	}
	rows, err := db.db.QueryContext(ctx, `SELECT `+todoCols+` FROM todos WHERE `+where+`
		ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?`, append(args, f.Limit, f.Skip)...)
	if err != nil {
		return nil, 0, wrap("list todos", err)
	}
	defer rows.Close()
	todos := []store.Todo{}
	for rows.Next() {
		t, err := scanTodo(rows)
		if err != nil {
			return nil, 0, wrap("list todos", err)
		}
		todos = append(todos, t)
	}
	return todos, total, wrap("list todos", rows.Err())
}

// GetTodo returns one of the user's todos; CodeNotFound otherwise.
func (db *DB) GetTodo(ctx context.Context, userID, id string) (store.Todo, error) {
	t, err := scanTodo(db.db.QueryRowContext(ctx, `SELECT `+todoCols+` FROM todos WHERE id = ? AND user_id = ?`, id, userID))
	return t, wrap("get todo", err)
}

// CreateTodo inserts a todo and appends its todo.created event.
func (db *DB) CreateTodo(ctx context.Context, userID string, in store.TodoCreate) (store.Event, error) {
	now := store.Now()
	return db.change(ctx, userID, store.EventTodoCreated, func(tx *sql.Tx) (store.Todo, error) {
		return scanTodo(tx.QueryRowContext(ctx, `
			INSERT INTO todos (id, user_id, title, description, is_complete, created_at, updated_at)
			VALUES (?, ?, ?, ?, false, ?, ?)
			RETURNING `+todoCols, store.NewID(), userID, in.Title, in.Description, now, now))
	})
}

// UpdateTodo changes a todo and appends its todo.updated event.
func (db *DB) UpdateTodo(ctx context.Context, userID, id string, in store.TodoUpdate) (store.Event, error) {
	now := store.Now()
	return db.change(ctx, userID, store.EventTodoUpdated, func(tx *sql.Tx) (store.Todo, error) {
		return scanTodo(tx.QueryRowContext(ctx, `
			UPDATE todos SET title = COALESCE(?, title), description = COALESCE(?, description),
				is_complete = COALESCE(?, is_complete), updated_at = ?
			WHERE id = ? AND user_id = ?
			RETURNING `+todoCols, in.Title, in.Description, in.IsComplete, now, id, userID))
	})
}

// DeleteTodo deletes a todo and appends its todo.deleted event.
func (db *DB) DeleteTodo(ctx context.Context, userID, id string) (store.Event, error) {
	return db.change(ctx, userID, store.EventTodoDeleted, func(tx *sql.Tx) (store.Todo, error) {
		return scanTodo(tx.QueryRowContext(ctx, `DELETE FROM todos WHERE id = ? AND user_id = ? RETURNING `+todoCols, id, userID))
	})
}

// change runs write and appends the event of its result in one transaction.
func (db *DB) change(ctx context.Context, userID, typ string, write func(*sql.Tx) (store.Todo, error)) (ev store.Event, err error) {
	tx, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		return ev, wrap(typ, err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	todo, err := write(tx)
	if err != nil {
		return ev, wrap(typ, err)
	}
	ev = store.Event{Type: typ, Todo: todo, At: store.Now()}
	data, err := json.Marshal(todo)
	if err != nil {
		return ev, err
	}
	if err = tx.QueryRowContext(ctx, `
		INSERT INTO user_seqs (user_id, seq) VALUES (?, 1)
		ON CONFLICT (user_id) DO UPDATE SET seq = user_seqs.seq + 1
		RETURNING seq`, userID).Scan(&ev.Seq); err != nil {
		return ev, wrap(typ, err)
	}
	if _, err = tx.ExecContext(ctx, `INSERT INTO todo_events (user_id, seq, type, todo, created_at) VALUES (?, ?, ?, ?, ?)`,
		userID, ev.Seq, typ, string(data), ev.At); err != nil {
		return ev, wrap(typ, err)
	}
	return ev, wrap(typ, tx.Commit())
}

// EventsSince returns up to limit events with seq > since, in seq order.
func (db *DB) EventsSince(ctx context.Context, userID string, since int64, limit int) ([]store.Event, error) {
	rows, err := db.db.QueryContext(ctx, `
		SELECT type, seq, todo, created_at FROM todo_events
		WHERE user_id = ? AND seq > ? ORDER BY seq LIMIT ?`, userID, since, limit)
	if err != nil {
		return nil, wrap("events since", err)
	}
	defer rows.Close()
	var evs []store.Event
	for rows.Next() {
		var ev store.Event
		var data string
		if err := rows.Scan(&ev.Type, &ev.Seq, &data, &ev.At); err != nil {
			return nil, wrap("events since", err)
		}
		ev.At = ev.At.UTC()
		if err := json.Unmarshal([]byte(data), &ev.Todo); err != nil {
			return nil, fmt.Errorf("events since: decode event %d: %w", ev.Seq, err)
		}
		evs = append(evs, ev)
	}
	return evs, wrap("events since", rows.Err())
}

// LastSeq returns the user's latest seq, 0 if there is none.
func (db *DB) LastSeq(ctx context.Context, userID string) (int64, error) {
	var seq int64
	err := db.db.QueryRowContext(ctx, `SELECT seq FROM user_seqs WHERE user_id = ?`, userID).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return seq, wrap("last seq", err)
}

// LastSeqs returns the latest seq of each of userIDs that has events.
func (db *DB) LastSeqs(ctx context.Context, userIDs []string) (map[string]int64, error) {
	ids, err := json.Marshal(userIDs)
	if err != nil {
		return nil, fmt.Errorf("last seqs: %w", err)
	}
	rows, err := db.db.QueryContext(ctx, `SELECT user_id, seq FROM user_seqs WHERE user_id IN (SELECT value FROM json_each(?))`, string(ids))
	if err != nil {
		return nil, wrap("last seqs", err)
	}
	defer rows.Close()
	out := make(map[string]int64, len(userIDs))
	for rows.Next() {
		var user string
		var seq int64
		if err := rows.Scan(&user, &seq); err != nil {
			return nil, wrap("last seqs", err)
		}
		out[user] = seq
	}
	return out, wrap("last seqs", rows.Err())
}

// PruneEvents deletes old events, always keeping each user's newest.
func (db *DB) PruneEvents(ctx context.Context, keep int, before time.Time) (int64, error) {
	res, err := db.db.ExecContext(ctx, store.PruneEventsSQL("?", "?"), keep, before.UTC())
	if err != nil {
		return 0, wrap("prune events", err)
	}
	n, err := res.RowsAffected()
	return n, wrap("prune events", err)
}

// CreateChatMessage stores an exchange with the agent.
func (db *DB) CreateChatMessage(ctx context.Context, m store.ChatMessage) (store.ChatMessage, error) {
	m = store.NewChatMessage(m)
	// Only for an existing user, as on PostgreSQL.
	res, err := db.db.ExecContext(ctx, `
		INSERT INTO chat_messages (id, user_id, message, response, tool_calls, status, created_at, updated_at)
		SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 WHERE EXISTS (SELECT 1 FROM "user" WHERE id = ?2)`,
		m.ID, m.UserID, m.Message, m.Response, string(m.ToolCalls), m.Status, m.CreatedAt, m.UpdatedAt)
	if err == nil {
		if n, _ := res.RowsAffected(); n == 0 {
			return m, fmt.Errorf("create chat message: %w", store.ErrUserNotFound)
		}
	}
	return m, wrap("create chat message", err)
}

// ListChatMessages returns the user's exchanges before before, newest first.
func (db *DB) ListChatMessages(ctx context.Context, userID string, before time.Time, limit int) ([]store.ChatMessage, error) {
	if before.IsZero() {
		before = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	rows, err := db.db.QueryContext(ctx, `
		SELECT id, user_id, message, response, tool_calls, status, created_at, updated_at
		FROM chat_messages WHERE user_id = ? AND created_at < ?
		ORDER BY created_at DESC, id DESC LIMIT ?`, userID, before.UTC(), limit)
	if err != nil {
		return nil, wrap("list chat messages", err)
	}
	defer rows.Close()
	ms := []store.ChatMessage{}
	for rows.Next() {
		var m store.ChatMessage
		var calls string
		if err := rows.Scan(&m.ID, &m.UserID, &m.Message, &m.Response, &calls, &m.Status, &m.CreatedAt, &m.UpdatedAt); err != nil {
			return nil, wrap("list chat messages", err)
		}
		m.ToolCalls = json.RawMessage(calls)
		m.CreatedAt, m.UpdatedAt = m.CreatedAt.UTC(), m.UpdatedAt.UTC()
		ms = append(ms, m)
	}
	return ms, wrap("list chat messages", rows.Err())
}

// wrap turns driver errors into store errors: no rows is CodeNotFound.
func wrap(op string, err error) error {
	var se *store.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &se):
		return err
	case errors.Is(err, sql.ErrNoRows):
		if strings.Contains(op, "user") {
			return store.Errorf(store.CodeNotFound, "user not found")
		}
		return store.Errorf(store.CodeNotFound, "todo not found")
	case op == store.EventTodoCreated && strings.Contains(err.Error(), "FOREIGN KEY constraint failed"):
		// todos.user_id references "user": the user was deleted.
		return fmt.Errorf("%s: %w", op, store.ErrUserNotFound)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// LogEvent is an event of the log with its user and its place in commit order.
type LogEvent struct {
	Cursor int64 // the event's place in the log: later commits have larger cursors
	UserID string
	Event  store.Event
}

// EventCursor returns the cursor of the newest event in the log, 0 if there is
// none. It is one seek: a poll of it costs next to nothing.
//
// The cursor is the row's rowid. Commits are serialized by SQLite's write lock
// and the newest row is never pruned (PruneEvents keeps each user's newest
// event), so rowids grow in commit order across every process writing the file.
// VACUUM may renumber them: a cursor larger than EventCursor means that happened.
func (db *DB) EventCursor(ctx context.Context) (int64, error) {
	var cursor sql.NullInt64
	err := db.db.QueryRowContext(ctx, `SELECT max(rowid) FROM todo_events`).Scan(&cursor)
	return cursor.Int64, wrap("event cursor", err)
}

// EventsAfter returns up to limit events of every user committed after cursor,
// in commit order: what processes sharing the file (a second server, `evo mcp`)
// wrote, along with this one's own.
func (db *DB) EventsAfter(ctx context.Context, cursor int64, limit int) ([]LogEvent, error) {
	rows, err := db.db.QueryContext(ctx, `
		SELECT rowid, user_id, type, seq, todo, created_at FROM todo_events
		WHERE rowid > ? ORDER BY rowid LIMIT ?`, cursor, limit)
	if err != nil {
		return nil, wrap("events after", err)
	}
	defer rows.Close()
	var evs []LogEvent
	for rows.Next() {
		var e LogEvent
		var data string
		if err := rows.Scan(&e.Cursor, &e.UserID, &e.Event.Type, &e.Event.Seq, &data, &e.Event.At); err != nil {
			return nil, wrap("events after", err)
		}
		e.Event.At = e.Event.At.UTC()
		if err := json.Unmarshal([]byte(data), &e.Event.Todo); err != nil {
			return nil, fmt.Errorf("events after: decode event %d of user %s: %w", e.Event.Seq, e.UserID, err)
		}
		evs = append(evs, e)
	}
	return evs, wrap("events after", rows.Err())
}
