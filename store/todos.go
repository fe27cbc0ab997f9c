package store

import (
	"context"
	"fmt"

	"github.com/google/uuid"
)

// Publisher receives every committed event, after its transaction commits.
// The realtime hub implements it; failures are its own to log and recover
// from (subscribers catch up from the event log).
type Publisher interface {
	PublishEvent(ctx context.Context, userID string, ev Event)
}

// Todos is the one path through which todos change: REST handlers, MCP tools
// and the agent all call it. Each change is written with its event in one
// transaction, then published.
type Todos struct {
	db  DB
	pub Publisher
}

// NewTodos returns the todo service over db, publishing to pub (nil: none).
func NewTodos(db DB, pub Publisher) *Todos {
	return &Todos{db: db, pub: pub}
}

// List returns a page of the user's todos and the total matching f.
func (s *Todos) List(ctx context.Context, userID string, f TodoFilter) ([]Todo, int, error) {
	if err := f.Validate(); err != nil {
		return nil, 0, err
	}
	todos, total, err := s.db.ListTodos(ctx, userID, f)
	if err != nil {
		return nil, 0, fmt.Errorf("list todos: %w", err)
	}
	return todos, total, nil
}

// Get returns one of the user's todos; CodeNotFound otherwise.
func (s *Todos) Get(ctx context.Context, userID, id string) (Todo, error) {
	id, err := canonicalID(id)
	if err != nil {
		return Todo{}, err
	}
	return s.db.GetTodo(ctx, userID, id)
}

// Create validates and stores a new todo; CodeInvalid names the field.
func (s *Todos) Create(ctx context.Context, userID string, in TodoCreate) (Todo, error) {
	if err := in.Validate(); err != nil {
		return Todo{}, err
	}
	return s.commit(ctx, userID)(s.db.CreateTodo(ctx, userID, in))
}

// Update changes the given fields of one of the user's todos.
func (s *Todos) Update(ctx context.Context, userID, id string, in TodoUpdate) (Todo, error) {
	id, err := canonicalID(id)
	if err != nil {
		return Todo{}, err
	}
	if err := in.Validate(); err != nil {
		return Todo{}, err
	}
	return s.commit(ctx, userID)(s.db.UpdateTodo(ctx, userID, id, in))
}

// Delete removes one of the user's todos and returns it as it was.
func (s *Todos) Delete(ctx context.Context, userID, id string) (Todo, error) {
	id, err := canonicalID(id)
	if err != nil {
		return Todo{}, err
	}
	return s.commit(ctx, userID)(s.db.DeleteTodo(ctx, userID, id))
}

// commit publishes the event of a committed change. The publish outlives the
// caller's context: a client that hangs up must not keep its other tabs from
// hearing about the change.
func (s *Todos) commit(ctx context.Context, userID string) func(Event, error) (Todo, error) {
	return func(ev Event, err error) (Todo, error) {
		if err != nil {
			return Todo{}, err
		}
		if s.pub != nil {
			s.pub.PublishEvent(context.WithoutCancel(ctx), userID, ev)
		}
		return ev.Todo, nil
	}
}

// canonicalID rejects ids that are not UUIDs before they reach the
// database and returns the lower-case form both stores keep.
func canonicalID(id string) (string, error) {
	u, err := uuid.Parse(id)
	if err != nil || len(id) != 36 {
		return "", FieldError("id", "id must be a UUID")
	}
	return u.String(), nil
}
