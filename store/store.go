// Package store holds Evo's domain types, the one path through which every
// todo changes, and its persistence on PostgreSQL (store/postgres) and
// embedded SQLite (store/sqlite).
package store

import (
	"context"
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"
)

// Validation limits, from the system Evo replaces.
const (
	MaxTitleLen       = 500
	MaxDescriptionLen = 2000
	DefaultListLimit  = 100
	MaxListLimit      = 1000
	MaxChatMessageLen = 4000
)

// User is a row of Better Auth's "user" table. Evo only reads it, except for
// the development issuer, which creates users.
type User struct {
	ID            string    `json:"id"`
	Email         string    `json:"email"`
	Name          string    `json:"name"`
	EmailVerified bool      `json:"emailVerified"`
	Image         *string   `json:"image"`
	CreatedAt     time.Time `json:"createdAt"`
	UpdatedAt     time.Time `json:"updatedAt"`
}

// Todo is one task of one user.
type Todo struct {
	ID          string    `json:"id"`
	UserID      string    `json:"user_id"`
	Title       string    `json:"title"`
	Description *string   `json:"description"`
	IsComplete  bool      `json:"is_complete"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Event types, also the WebSocket frame types that carry them.
const (
	EventTodoCreated = "todo.created"
	EventTodoUpdated = "todo.updated"
	EventTodoDeleted = "todo.deleted"
)

// Event is one entry of a user's event log: a todo change with its per-user,
// gap-free, monotonic sequence number.
type Event struct {
	Type string    `json:"type"`
	Seq  int64     `json:"seq"`
	Todo Todo      `json:"todo"`
	At   time.Time `json:"at"`
}

// ChatMessage is one stored exchange with the agent.
type ChatMessage struct {
	ID        string          `json:"id"`
	UserID    string          `json:"user_id"`
	Message   string          `json:"message"`
	Response  string          `json:"response"`
	ToolCalls json.RawMessage `json:"tool_calls"`
	Status    string          `json:"status"` // "completed", "cancelled" or "failed"
	CreatedAt time.Time       `json:"created_at"`
	UpdatedAt time.Time       `json:"updated_at"`
}

// TodoCreate is the input of a new todo.
type TodoCreate struct {
	Title       string
	Description *string
}

// TodoUpdate changes the fields that are not nil.
type TodoUpdate struct {
	Title       *string
	Description *string
	IsComplete  *bool
}

// TodoFilter selects a page of a user's todos, newest first.
type TodoFilter struct {
	Skip       int
	Limit      int
	IsComplete *bool
}

// Validate checks the create input against the limits.
func (in *TodoCreate) Validate() error {
	if err := validateTitle(in.Title); err != nil {
		return err
	}
	return validateDescription(in.Description)
}

// Validate checks the update input: at least one field, each within limits.
func (in *TodoUpdate) Validate() error {
	if in.Title == nil && in.Description == nil && in.IsComplete == nil {
		return Errorf(CodeInvalid, "at least one field must be provided")
	}
	if in.Title != nil {
		if err := validateTitle(*in.Title); err != nil {
			return err
		}
	}
	return validateDescription(in.Description)
}

// Validate checks the filter and fills in the default limit.
func (f *TodoFilter) Validate() error {
	if f.Skip < 0 {
		return FieldError("skip", "skip must be 0 or more")
	}
	if f.Limit == 0 {
		f.Limit = DefaultListLimit
	}
	if f.Limit < 1 || f.Limit > MaxListLimit {
		return FieldError("limit", "limit must be between 1 and %d", MaxListLimit)
	}
	return nil
}

func validateTitle(t string) error {
	switch n := utf8.RuneCountInString(t); {
	case strings.TrimSpace(t) == "":
		return FieldError("title", "title must not be empty or only whitespace")
	case n > MaxTitleLen:
		return FieldError("title", "title must be at most %d characters, got %d", MaxTitleLen, n)
	case !utf8.ValidString(t):
		return FieldError("title", "title must be valid UTF-8")
	case strings.ContainsRune(t, 0):
		// PostgreSQL cannot store NUL in text; SQLite could, so refuse it
		// on both rather than fail on one.
		return FieldError("title", "title must not contain NUL characters")
	}
	return nil
}

func validateDescription(d *string) error {
	if d == nil {
		return nil
	}
	if n := utf8.RuneCountInString(*d); n > MaxDescriptionLen {
		return FieldError("description", "description must be at most %d characters, got %d", MaxDescriptionLen, n)
	}
	if !utf8.ValidString(*d) {
		return FieldError("description", "description must be valid UTF-8")
	}
	if strings.ContainsRune(*d, 0) {
		return FieldError("description", "description must not contain NUL characters")
	}
	return nil
}

// DB is what a storage backend provides. Every method scopes by user: a todo
// of another user is CodeNotFound, exactly like a missing one. Change methods
// write the todo and its event in one transaction.
type DB interface {
	// GetUser returns the user; CodeNotFound if there is none.
	GetUser(ctx context.Context, id string) (User, error)
	// ExistingUsers returns those of ids that are users, in one query (the token
	// verifier's user check, for one user or for every user it remembers).
	ExistingUsers(ctx context.Context, ids []string) ([]string, error)
	// EnsureUser returns the user with this email, creating it if missing.
	EnsureUser(ctx context.Context, email, name string) (User, error)

	// ListTodos returns a page of the user's todos, newest first, and the
	// total that matches the filter.
	ListTodos(ctx context.Context, userID string, f TodoFilter) ([]Todo, int, error)
	// GetTodo returns one todo; CodeNotFound if missing or not the user's.
	GetTodo(ctx context.Context, userID, id string) (Todo, error)
	// CreateTodo inserts a todo and appends its todo.created event.
	CreateTodo(ctx context.Context, userID string, in TodoCreate) (Event, error)
	// UpdateTodo changes a todo and appends its todo.updated event; CodeNotFound.
	UpdateTodo(ctx context.Context, userID, id string, in TodoUpdate) (Event, error)
	// DeleteTodo deletes a todo and appends its todo.deleted event; CodeNotFound.
	DeleteTodo(ctx context.Context, userID, id string) (Event, error)

	// EventsSince returns up to limit events of the user with seq > since,
	// in seq order.
	EventsSince(ctx context.Context, userID string, since int64, limit int) ([]Event, error)
	// LastSeq returns the user's latest seq, 0 if there is none.
	LastSeq(ctx context.Context, userID string) (int64, error)
	// LastSeqs returns the latest seq of each of userIDs that has events, in
	// one query (the realtime hub's check for undelivered events).
	LastSeqs(ctx context.Context, userIDs []string) (map[string]int64, error)
	// PruneEvents deletes events beyond the newest keep of each user and
	// events older than before, but always keeps each user's newest event.
	PruneEvents(ctx context.Context, keep int, before time.Time) (int64, error)

	// CreateChatMessage stores an exchange with the agent.
	CreateChatMessage(ctx context.Context, m ChatMessage) (ChatMessage, error)
	// ListChatMessages returns the user's exchanges created before before
	// (all if zero), newest first.
	ListChatMessages(ctx context.Context, userID string, before time.Time, limit int) ([]ChatMessage, error)

	// Ping checks that the database answers.
	Ping(ctx context.Context) error
	// Close releases the connections.
	Close() error
}
