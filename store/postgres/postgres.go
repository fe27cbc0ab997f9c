// Package postgres implements store.DB on PostgreSQL with pgx.
package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for migrations

	"github.com/evotodo/evo/migrations"
	"github.com/evotodo/evo/store"
)

// DB is a PostgreSQL-backed store.DB.
type DB struct {
	pool  *pgxpool.Pool
	url   string
	batch *batcher // group commit of the todo changes (batch.go)
}

var _ store.DB = (*DB)(nil)

// Open connects to url with a pool of at most maxConns connections and
// checks that the server answers.
func Open(ctx context.Context, url string, maxConns int32) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	cfg.MaxConnIdleTime = 5 * time.Minute
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open PostgreSQL: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	db := &DB{pool: pool, url: url}
	// Half the pool for change batches: the rest serves reads (lists, user checks,
	// catch-ups) while batches are in flight.
	db.batch = newBatcher(db, int(cfg.MaxConns)/2)
	return db, nil
}

// Migrate applies the pending migrations.
func (db *DB) Migrate(ctx context.Context, log *slog.Logger) error {
	sdb, err := sql.Open("pgx", db.url)
	if err != nil {
		return fmt.Errorf("open PostgreSQL for migrations: %w", err)
	}
	defer sdb.Close()
	return migrations.Up(ctx, sdb, migrations.Postgres, log)
}

// Pool returns the connection pool.
func (db *DB) Pool() *pgxpool.Pool { return db.pool }

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error {
	return wrap("ping", db.pool.Ping(ctx))
}

// Close closes the pool.
func (db *DB) Close() error {
	db.pool.Close()
	return nil
}

const userCols = `id, email, name, "emailVerified", image, "createdAt", "updatedAt"`

func scanUser(row pgx.Row) (store.User, error) {
	var u store.User
	err := row.Scan(&u.ID, &u.Email, &u.Name, &u.EmailVerified, &u.Image, &u.CreatedAt, &u.UpdatedAt)
	u.CreatedAt, u.UpdatedAt = u.CreatedAt.UTC(), u.UpdatedAt.UTC()
	return u, err
}

// GetUser returns the user; CodeNotFound if there is none.
func (db *DB) GetUser(ctx context.Context, id string) (store.User, error) {
	u, err := scanUser(db.pool.QueryRow(ctx, `SELECT `+userCols+` FROM "user" WHERE id = $1`, id))
	return u, wrap("get user", err)
}

// ExistingUsers returns those of ids that are users.
func (db *DB) ExistingUsers(ctx context.Context, ids []string) ([]string, error) {
	rows, err := db.pool.Query(ctx, `SELECT id FROM "user" WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, wrap("get users", err)
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return found, wrap("get users", err)
}

// EnsureUser returns the user with this email, creating it if missing. It
// needs no unique index on email: the "user" table SQLModel created for the
// Python backend has none, so ON CONFLICT (email) would fail there.
func (db *DB) EnsureUser(ctx context.Context, email, name string) (store.User, error) {
	for range 3 {
		u, err := scanUser(db.pool.QueryRow(ctx,
			`SELECT `+userCols+` FROM "user" WHERE email = $1 ORDER BY "createdAt", id LIMIT 1`, email))
		if !errors.Is(err, pgx.ErrNoRows) {
			return u, wrap("ensure user", err)
		}
		u, err = scanUser(db.pool.QueryRow(ctx, `
			INSERT INTO "user" (id, email, name, "emailVerified", "createdAt", "updatedAt")
			VALUES ($1, $2, $3, false, $4, $4)
			ON CONFLICT DO NOTHING
			RETURNING `+userCols, store.NewUserID(), email, name, store.Now()))
		if !errors.Is(err, pgx.ErrNoRows) {
			return u, wrap("ensure user", err)
		}
		// A concurrent call inserted this email first: read its row.
	}
	return store.User{}, fmt.Errorf("ensure user %s: lost every race to insert it", email)
}

const todoCols = `id::text, user_id, title, description, is_complete, created_at, updated_at`

func scanTodo(row pgx.Row) (store.Todo, error) {
	var t store.Todo
	err := row.Scan(&t.ID, &t.UserID, &t.Title, &t.Description, &t.IsComplete, &t.CreatedAt, &t.UpdatedAt)
	t.CreatedAt, t.UpdatedAt = t.CreatedAt.UTC(), t.UpdatedAt.UTC()
	return t, err
}

// listSQL is the count and the page of ListTodos in one statement, one round trip: the
// count (an index-only scan of the user's todos) joined with the page (LIMIT rows of the
// same index, newest first). %s is the filter on is_complete, if any: two statements
// rather than "$2 IS NULL OR is_complete = $2", whose generic plan (pgx prepares every
// statement, PostgreSQL switches to the generic plan after five runs) must read every
// todo of the user from the table to count them. An empty page (no todos, or skip past
// the end) is one row with the total and an empty id. The page's columns are NOT NULL
// in the table; COALESCE only keeps the scan of that empty row simple. user_id is not
// read back: it is $1.
const listSQL = `
SELECT coalesce(p.id::text, ''), coalesce(p.title, ''), p.description,
	coalesce(p.is_complete, false), coalesce(p.created_at, 'epoch'), coalesce(p.updated_at, 'epoch'), c.total
FROM (SELECT count(*) AS total FROM todos WHERE user_id = $1%[1]s) c
LEFT JOIN LATERAL (SELECT id, title, description, is_complete, created_at, updated_at FROM todos
	WHERE user_id = $1%[1]s
	ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT $3) p ON true
ORDER BY p.created_at DESC, p.id DESC`

var (
	listAllSQL      = fmt.Sprintf(listSQL, "")
	listFilteredSQL = fmt.Sprintf(listSQL, " AND is_complete = $4")
)

// ListTodos returns a page of the user's todos, newest first, and the total.
func (db *DB) ListTodos(ctx context.Context, userID string, f store.TodoFilter) ([]store.Todo, int, error) {
	query, args := listAllSQL, []any{userID, f.Skip, f.Limit}
	if f.IsComplete != nil {
		query, args = listFilteredSQL, append(args, *f.IsComplete)
	}
	rows, err := db.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, 0, wrap("list todos", err)
	}
	defer rows.Close()
	todos := make([]store.Todo, 0, min(max(f.Limit, 0), 64))
	var t store.Todo
	var total int
	// One destination for every row: Scan's arguments escape, per row they would cost
	// two allocations.
	dest := []any{&t.ID, &t.Title, &t.Description, &t.IsComplete, &t.CreatedAt, &t.UpdatedAt, &total}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, 0, wrap("list todos", err)
		}
		if t.ID == "" { // the page is empty
			continue
		}
		// user_id = $1 compares bytes (deterministic collation): the row's is userID.
		t.UserID = userID
		t.CreatedAt, t.UpdatedAt = t.CreatedAt.UTC(), t.UpdatedAt.UTC()
		todos = append(todos, t)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, wrap("list todos", err)
	}
	return todos, total, nil
}

// GetTodo returns one of the user's todos; CodeNotFound otherwise.
func (db *DB) GetTodo(ctx context.Context, userID, id string) (store.Todo, error) {
	t, err := scanTodo(db.pool.QueryRow(ctx, `SELECT `+todoCols+` FROM todos WHERE id = $1 AND user_id = $2`, id, userID))
	return t, wrap("get todo", err)
}

// CreateTodo inserts a todo and appends its todo.created event.
func (db *DB) CreateTodo(ctx context.Context, userID string, in store.TodoCreate) (store.Event, error) {
	return db.change(ctx, userID, store.EventTodoCreated, createSQL, "", store.NewID(), in.Title, in.Description)
}

// UpdateTodo changes a todo and appends its todo.updated event.
func (db *DB) UpdateTodo(ctx context.Context, userID, id string, in store.TodoUpdate) (store.Event, error) {
	return db.change(ctx, userID, store.EventTodoUpdated, updateSQL, id, id, in.Title, in.Description, in.IsComplete)
}

// DeleteTodo deletes a todo and appends its todo.deleted event.
func (db *DB) DeleteTodo(ctx context.Context, userID, id string) (store.Event, error) {
	return db.change(ctx, userID, store.EventTodoDeleted, deleteSQL, id, id)
}

// The statements of CreateTodo, UpdateTodo and DeleteTodo (see changeSQL), built once:
// pgx finds its prepared statement by the SQL text, on every call.
var (
	createSQL = fmt.Sprintf(changeSQL, `
		INSERT INTO todos (id, user_id, title, description, is_complete, created_at, updated_at)
		VALUES ($4, $1, $5, $6, false, $3, $3)`)
	updateSQL = fmt.Sprintf(changeSQL, `
		UPDATE todos SET title = COALESCE($5, title), description = COALESCE($6, description),
			is_complete = COALESCE($7, is_complete), updated_at = $3
		WHERE id = $4 AND user_id = $1`)
	deleteSQL = fmt.Sprintf(changeSQL, `DELETE FROM todos WHERE id = $4 AND user_id = $1`)
)

// changeSQL runs a todo write (%s; its parameters start at $4) and appends its event
// in one statement: $1 is the user, $2 the event type, $3 the event's time (also the
// todo's updated_at). One round trip, and the user's seq row, whose lock serializes
// the user's changes, is locked only while PostgreSQL runs the statement and commits,
// not across round trips to the server. No row written (a missing todo): no seq, no
// event, no rows. The event's todo is the JSON of the row written (as json.Marshal of
// store.Todo names its fields; times RFC 3339 in UTC with microseconds), built by
// PostgreSQL since an update's or a delete's row is only known there.
const changeSQL = `WITH t AS (%s
	RETURNING id, user_id, title, description, is_complete, created_at, updated_at),
s AS (
	INSERT INTO user_seqs (user_id, seq) SELECT $1, 1 FROM t
	ON CONFLICT (user_id) DO UPDATE SET seq = user_seqs.seq + 1
	RETURNING seq),
e AS (
	INSERT INTO todo_events (user_id, seq, type, todo, created_at)
	SELECT $1, s.seq, $2, jsonb_build_object(
		'id', t.id::text, 'user_id', t.user_id, 'title', t.title, 'description', t.description,
		'is_complete', t.is_complete,
		'created_at', to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
		'updated_at', to_char(t.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')),
		$3
	FROM t, s
	RETURNING seq)
SELECT t.id::text, t.user_id, t.title, t.description, t.is_complete, t.created_at, t.updated_at, e.seq FROM t, e`

// change runs query (one of createSQL, updateSQL, deleteSQL) with args ($4 on) in the
// next batch (batch.go) and returns the event. lockID is the id of the existing todo it
// changes (update, delete), "" for a create.
func (db *DB) change(ctx context.Context, userID, typ, query, lockID string, args ...any) (store.Event, error) {
	p := &pending{userID: userID, typ: typ, query: query, lockID: lockID}
	p.ev = store.Event{Type: typ, At: store.Now()}
	p.args = make([]any, 0, 3+len(args))
	p.args = append(append(p.args, userID, typ, p.ev.At), args...)
	if err := db.batch.submit(ctx, p); err != nil {
		return store.Event{}, err
	}
	return p.ev, nil
}

// EventsSince returns up to limit events with seq > since, in seq order.
func (db *DB) EventsSince(ctx context.Context, userID string, since int64, limit int) ([]store.Event, error) {
	rows, err := db.pool.Query(ctx, `
		SELECT type, seq, todo, created_at FROM todo_events
		WHERE user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`, userID, since, limit)
	if err != nil {
		return nil, wrap("events since", err)
	}
	evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Event, error) {
		var ev store.Event
		var data []byte
		if err := r.Scan(&ev.Type, &ev.Seq, &data, &ev.At); err != nil {
			return ev, err
		}
		ev.At = ev.At.UTC()
		return ev, json.Unmarshal(data, &ev.Todo)
	})
	return evs, wrap("events since", err)
}

// LastSeq returns the user's latest seq, 0 if there is none.
func (db *DB) LastSeq(ctx context.Context, userID string) (int64, error) {
	var seq int64
	err := db.pool.QueryRow(ctx, `SELECT seq FROM user_seqs WHERE user_id = $1`, userID).Scan(&seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return seq, wrap("last seq", err)
}

// LastSeqs returns the latest seq of each of userIDs that has events.
func (db *DB) LastSeqs(ctx context.Context, userIDs []string) (map[string]int64, error) {
	rows, err := db.pool.Query(ctx, `SELECT user_id, seq FROM user_seqs WHERE user_id = ANY($1)`, userIDs)
	if err != nil {
		return nil, wrap("last seqs", err)
	}
	out := make(map[string]int64, len(userIDs))
	var user string
	var seq int64
	_, err = pgx.ForEachRow(rows, []any{&user, &seq}, func() error {
		out[user] = seq
		return nil
	})
	return out, wrap("last seqs", err)
}

// PruneEvents deletes old events, always keeping each user's newest.
func (db *DB) PruneEvents(ctx context.Context, keep int, before time.Time) (int64, error) {
	tag, err := db.pool.Exec(ctx, store.PruneEventsSQL("$1", "$2"), keep, before)
	return tag.RowsAffected(), wrap("prune events", err)
}

// CreateChatMessage stores an exchange with the agent.
func (db *DB) CreateChatMessage(ctx context.Context, m store.ChatMessage) (store.ChatMessage, error) {
	m = store.NewChatMessage(m)
	// Only for an existing user (chat_messages has no foreign key: the Python
	// backend's table had none): a user deleted while the agent ran gets nothing stored.
	tag, err := db.pool.Exec(ctx, `
		INSERT INTO chat_messages (id, user_id, message, response, tool_calls, status, created_at, updated_at)
		SELECT $1, $2::text, $3, $4, $5, $6, $7, $7 WHERE EXISTS (SELECT FROM "user" WHERE id = $2::text)`,
		m.ID, m.UserID, m.Message, m.Response, string(m.ToolCalls), m.Status, m.CreatedAt)
	if err == nil && tag.RowsAffected() == 0 {
		return m, fmt.Errorf("create chat message: %w", store.ErrUserNotFound)
	}
	return m, wrap("create chat message", err)
}

// ListChatMessages returns the user's exchanges before before, newest first.
func (db *DB) ListChatMessages(ctx context.Context, userID string, before time.Time, limit int) ([]store.ChatMessage, error) {
	if before.IsZero() {
		before = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	rows, err := db.pool.Query(ctx, `
		SELECT id::text, user_id, message, response, tool_calls::text, status, created_at, updated_at
		FROM chat_messages WHERE user_id = $1 AND created_at < $2
		ORDER BY created_at DESC, id DESC LIMIT $3`, userID, before, limit)
	if err != nil {
		return nil, wrap("list chat messages", err)
	}
	ms, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.ChatMessage, error) {
		var m store.ChatMessage
		var calls string
		err := r.Scan(&m.ID, &m.UserID, &m.Message, &m.Response, &calls, &m.Status, &m.CreatedAt, &m.UpdatedAt)
		m.ToolCalls = json.RawMessage(calls)
		m.CreatedAt, m.UpdatedAt = m.CreatedAt.UTC(), m.UpdatedAt.UTC()
		return m, err
	})
	return ms, wrap("list chat messages", err)
}

// wrap turns driver errors into store errors: no rows is CodeNotFound, a
// database that cannot be reached is CodeUnavailable; others keep their
// cause for the log and are internal.
func wrap(op string, err error) error {
	var se *store.Error
	var ce *pgconn.ConnectError
	var ne net.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &se):
		return err
	case errors.Is(err, pgx.ErrNoRows):
		return store.Errorf(store.CodeNotFound, "%s", notFound(op))
	case isPgError(err, "23503") && op == store.EventTodoCreated:
		// todos.user_id references "user": the user was deleted.
		return fmt.Errorf("%s: %w", op, store.ErrUserNotFound)
	case errors.As(err, &ce), errors.As(err, &ne), errors.Is(err, context.DeadlineExceeded), pgconn.SafeToRetry(err),
		connectionLost(err):
		return fmt.Errorf("%s: %w: %v", op, store.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// connectionLost reports an error of a connection that broke mid-query: the
// server went away (killed or crashed: unexpected EOF; shut down or
// restarting: SQLSTATE 57P01-57P03; class 08, connection exceptions), or
// pgx had already closed the connection.
func connectionLost(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03" || strings.HasPrefix(pe.Code, "08")
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) ||
		strings.Contains(err.Error(), "conn closed")
}

// isPgError reports whether err is PostgreSQL's error with SQLSTATE code.
func isPgError(err error, code string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == code
}

func notFound(op string) string {
	switch op {
	case "get user":
		return "user not found"
	}
	return "todo not found"
}
