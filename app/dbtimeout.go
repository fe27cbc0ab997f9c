package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/evotodo/evo/store"
)

// boundedDB gives every operation of a PostgreSQL store at most DB_TIMEOUT,
// waiting for a pooled connection included. A database that accepts connections
// but does not answer then costs a request DB_TIMEOUT and a 503 `unavailable`,
// not REQUEST_TIMEOUT; pgx drops the connection a deadline cut, and the pool
// opens fresh ones (within its 5 s connect timeout) once the server answers again.
//
// Methods a store adds beyond these pass through unbounded (store.DB is embedded).
type boundedDB struct {
	store.DB
	timeout time.Duration
}

// pruneTimeout bounds PruneEvents, a background batch delete that may
// legitimately take longer than one request's query.
const pruneTimeout = time.Minute

func newBoundedDB(db store.DB, timeout time.Duration) *boundedDB {
	return &boundedDB{DB: db, timeout: timeout}
}

// Unwrap returns the store behind the bound.
func (b *boundedDB) Unwrap() store.DB { return b.DB }

// bounded runs op with a context that ends at most d from now. An operation
// cut by that deadline (rather than by its caller) is `unavailable`, naming
// DB_TIMEOUT.
func bounded[T any](ctx context.Context, d time.Duration, op func(context.Context) (T, error)) (T, error) {
	bctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	v, err := op(bctx)
	if err != nil && ctx.Err() == nil && errors.Is(bctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("%w (%v)", store.Errorf(store.CodeUnavailable, "database unavailable: no answer within DB_TIMEOUT (%s)", d), err)
	}
	return v, err
}

// bounded0 is bounded for operations that return only an error.
func bounded0(ctx context.Context, d time.Duration, op func(context.Context) error) error {
	_, err := bounded(ctx, d, func(ctx context.Context) (struct{}, error) { return struct{}{}, op(ctx) })
	return err
}

func (b *boundedDB) GetUser(ctx context.Context, id string) (store.User, error) {
	return bounded(ctx, b.timeout, func(ctx context.Context) (store.User, error) { return b.DB.GetUser(ctx, id) })
}

func (b *boundedDB) ExistingUsers(ctx context.Context, ids []string) ([]string, error) {
	return bounded(ctx, b.timeout, func(ctx context.Context) ([]string, error) { return b.DB.ExistingUsers(ctx, ids) })
}

func (b *boundedDB) EnsureUser(ctx context.Context, email, name string) (store.User, error) {
	return bounded(ctx, b.timeout, func(ctx context.Context) (store.User, error) { return b.DB.EnsureUser(ctx, email, name) })
}

func (b *boundedDB) ListTodos(ctx context.Context, userID string, f store.TodoFilter) ([]store.Todo, int, error) {
	var total int
	todos, err := bounded(ctx, b.timeout, func(ctx context.Context) ([]store.Todo, error) {
		todos, n, err := b.DB.ListTodos(ctx, userID, f)
		total = n
		return todos, err
	})
	return todos, total, err
}

func (b *boundedDB) GetTodo(ctx context.Context, userID, id string) (store.Todo, error) {
	return bounded(ctx, b.timeout, func(ctx context.Context) (store.Todo, error) { return b.DB.GetTodo(ctx, userID, id) })
}

func (b *boundedDB) CreateTodo(ctx context.Context, userID string, in store.TodoCreate) (store.Event, error) {
	return bounded(ctx, b.timeout, func(ctx context.Context) (store.Event, error) { return b.DB.CreateTodo(ctx, userID, in) })
}

func (b *boundedDB) UpdateTodo(ctx context.Context, userID, id string, in store.TodoUpdate) (store.Event, error) {
	return bounded(ctx, b.timeout, func(ctx context.Context) (store.Event, error) { return b.DB.UpdateTodo(ctx, userID, id, in) })
}

func (b *boundedDB) DeleteTodo(ctx context.Context, userID, id string) (store.Event, error) {
	return bounded(ctx, b.timeout, func(ctx context.Context) (store.Event, error) { return b.DB.DeleteTodo(ctx, userID, id) })
}

func (b *boundedDB) EventsSince(ctx context.Context, userID string, since int64, limit int) ([]store.Event, error) {
	return bounded(ctx, b.timeout, func(ctx context.Context) ([]store.Event, error) {
		return b.DB.EventsSince(ctx, userID, since, limit)
	})
}

func (b *boundedDB) LastSeq(ctx context.Context, userID string) (int64, error) {
	return bounded(ctx, b.timeout, func(ctx context.Context) (int64, error) { return b.DB.LastSeq(ctx, userID) })
}

func (b *boundedDB) PruneEvents(ctx context.Context, keep int, before time.Time) (int64, error) {
	return bounded(ctx, max(b.timeout, pruneTimeout), func(ctx context.Context) (int64, error) {
		return b.DB.PruneEvents(ctx, keep, before)
	})
}

func (b *boundedDB) CreateChatMessage(ctx context.Context, m store.ChatMessage) (store.ChatMessage, error) {
	return bounded(ctx, b.timeout, func(ctx context.Context) (store.ChatMessage, error) { return b.DB.CreateChatMessage(ctx, m) })
}

func (b *boundedDB) ListChatMessages(ctx context.Context, userID string, before time.Time, limit int) ([]store.ChatMessage, error) {
	return bounded(ctx, b.timeout, func(ctx context.Context) ([]store.ChatMessage, error) {
		return b.DB.ListChatMessages(ctx, userID, before, limit)
	})
}

func (b *boundedDB) Ping(ctx context.Context) error {
	return bounded0(ctx, b.timeout, b.DB.Ping)
}
