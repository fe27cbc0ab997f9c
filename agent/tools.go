package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/google/uuid"

	"github.com/evotodo/evo/store"
)

// Todos is what the tools need of the todo service. *store.Todos, the one
// change path, implements it.
type Todos interface {
	// List returns a page of the user's todos, newest first, and the total
	// matching f; CodeInvalid for a bad filter.
	List(ctx context.Context, userID string, f store.TodoFilter) ([]store.Todo, int, error)
	// Get returns one of the user's todos; CodeNotFound if missing or not
	// the user's.
	Get(ctx context.Context, userID, id string) (store.Todo, error)
	// Create stores a new todo and its event; CodeInvalid names the field.
	Create(ctx context.Context, userID string, in store.TodoCreate) (store.Todo, error)
	// Update changes a todo and records its event; CodeNotFound, CodeInvalid.
	Update(ctx context.Context, userID, id string, in store.TodoUpdate) (store.Todo, error)
	// Delete removes a todo, records its event and returns the todo as it
	// was; CodeNotFound.
	Delete(ctx context.Context, userID, id string) (store.Todo, error)
}

var _ Todos = (*store.Todos)(nil)

// Tool is one todo tool, served the same way to the chat agent and to MCP
// clients.
type Tool struct {
	Name        string
	Description string
	// Schema is the JSON Schema of the arguments (an object).
	Schema json.RawMessage
	// ReadOnly tools change nothing; Destructive ones may lose data. MCP
	// clients show these as hints when asking the user to allow a call.
	ReadOnly, Destructive bool
	// Run calls the tool for userID with the arguments as the model or
	// client sent them (a JSON object; null or empty means {}). Errors
	// carry a *store.Error (store.ErrorCode reads it): CodeBadRequest
	// (arguments not a JSON object), CodeInvalid (naming the field),
	// CodeNotFound ("task not found", also for another user's task),
	// CodeUnauthorized (no user), or what the store returned.
	Run func(ctx context.Context, userID string, args json.RawMessage) (Result, error)
}

// Result is what a tool call returns.
type Result struct {
	// Text is a short human summary, such as `Created task "Buy milk".`
	Text string
	// Data is the task or list: a Change or a TaskList, JSON-encodable.
	Data any
}

// Task is a todo as the tools show it.
type Task struct {
	ID          string  `json:"id"`
	Title       string  `json:"title"`
	Description *string `json:"description"`
	Completed   bool    `json:"completed"`
}

// TaskList is the data of list_tasks: a page of tasks, newest first, and how
// many match the status filter in all.
type TaskList struct {
	Tasks []Task `json:"tasks"`
	Total int    `json:"total"`
}

// Change statuses.
const (
	StatusCreated   = "created"
	StatusCompleted = "completed"
	StatusReopened  = "reopened"
	StatusUpdated   = "updated"
	StatusDeleted   = "deleted"
)

// Change is the data of the tools that change a task: what happened to
// which task, and the task as it is now (as it was, for a deletion).
type Change struct {
	TaskID string `json:"task_id"`
	Status string `json:"status"`
	Title  string `json:"title"`
	Task   Task   `json:"task"`
}

// Defaults of list_tasks.
const (
	DefaultListLimit = 50
	maxListLimit     = store.MaxListLimit
)

func taskOf(t store.Todo) Task {
	return Task{ID: t.ID, Title: t.Title, Description: t.Description, Completed: t.IsComplete}
}

func change(status string, t store.Todo) Change {
	return Change{TaskID: t.ID, Status: status, Title: t.Title, Task: taskOf(t)}
}

// Tools returns the five todo tools over t: add_task, list_tasks (status
// all by default, limit 50 by default, at most 1000), complete_task
// (completed=false reopens), delete_task and update_task. A task_id is the
// todo's UUID. The user is Run's userID, never an argument: a user_id
// argument is ignored.
func Tools(t Todos) []Tool {
	taskID := prop{"type": "string", "format": "uuid",
		"description": "The task's id, as add_task and list_tasks return it."}
	title := func(desc string) prop {
		return prop{"type": "string", "minLength": 1, "maxLength": store.MaxTitleLen, "description": desc}
	}
	description := func(desc string) prop {
		return prop{"type": "string", "maxLength": store.MaxDescriptionLen, "description": desc}
	}
	return []Tool{
		{
			Name:        "add_task",
			Description: "Create a new task (todo) for the user. Returns the created task.",
			Schema: schema([]string{"title"}, map[string]prop{
				"title":       title(fmt.Sprintf("What to do, 1 to %d characters.", store.MaxTitleLen)),
				"description": description(fmt.Sprintf("Optional details, up to %d characters.", store.MaxDescriptionLen)),
			}),
			Run: requireUser(addTask(t)),
		},
		{
			Name: "list_tasks",
			Description: "List the user's tasks, newest first: all of them, only pending ones or only completed ones. " +
				"Returns the tasks (id, title, description, completed) and the total that match.",
			Schema: schema(nil, map[string]prop{
				"status": {"type": "string", "enum": []string{"all", "pending", "completed"}, "default": "all",
					"description": "Which tasks: all (default), pending (not completed) or completed."},
				"limit": {"type": "integer", "minimum": 1, "maximum": maxListLimit, "default": DefaultListLimit,
					"description": fmt.Sprintf("The most tasks to return, 1 to %d (default %d).", maxListLimit, DefaultListLimit)},
			}),
			ReadOnly: true,
			Run:      requireUser(listTasks(t)),
		},
		{
			Name:        "complete_task",
			Description: "Mark a task as completed, or with completed=false reopen it (mark it pending again).",
			Schema: schema([]string{"task_id"}, map[string]prop{
				"task_id": taskID,
				"completed": {"type": "boolean", "default": true,
					"description": "true (default) completes the task, false reopens it."},
			}),
			Run: requireUser(completeTask(t)),
		},
		{
			Name:        "delete_task",
			Description: "Delete a task for good. Returns the task as it was.",
			Schema: schema([]string{"task_id"}, map[string]prop{
				"task_id": taskID,
			}),
			Destructive: true,
			Run:         requireUser(deleteTask(t)),
		},
		{
			Name:        "update_task",
			Description: "Change a task's title and/or description; give at least one of them.",
			Schema: schema([]string{"task_id"}, map[string]prop{
				"task_id":     taskID,
				"title":       title(fmt.Sprintf("The new title, 1 to %d characters.", store.MaxTitleLen)),
				"description": description(fmt.Sprintf("The new description, up to %d characters; an empty string clears it.", store.MaxDescriptionLen)),
			}),
			Run: requireUser(updateTask(t)),
		},
	}
}

// prop is one property of a JSON Schema.
type prop map[string]any

// schema returns the JSON Schema of an object with props, of which required
// must be present. Other properties (such as a user_id some clients send)
// are allowed and ignored.
func schema(required []string, props map[string]prop) json.RawMessage {
	s := map[string]any{"type": "object", "properties": props}
	if len(required) > 0 {
		s["required"] = required
	}
	data, err := json.Marshal(s)
	if err != nil {
		panic(fmt.Sprintf("agent: tool schema: %v", err)) // a bug in this file
	}
	return data
}

func addTask(t Todos) runFunc {
	return func(ctx context.Context, userID string, raw json.RawMessage) (Result, error) {
		var args struct {
			Title       *string `json:"title"`
			Description *string `json:"description"`
		}
		if err := decodeArgs(raw, &args); err != nil {
			return Result{}, err
		}
		if args.Title == nil {
			return Result{}, store.FieldError("title", "title is required")
		}
		todo, err := t.Create(ctx, userID, store.TodoCreate{Title: *args.Title, Description: args.Description})
		if err != nil {
			return Result{}, fmt.Errorf("add_task: %w", err)
		}
		return Result{Text: fmt.Sprintf("Created task %q.", todo.Title), Data: change(StatusCreated, todo)}, nil
	}
}

func listTasks(t Todos) runFunc {
	return func(ctx context.Context, userID string, raw json.RawMessage) (Result, error) {
		var args struct {
			Status *string `json:"status"`
			Limit  *int    `json:"limit"`
		}
		if err := decodeArgs(raw, &args); err != nil {
			return Result{}, err
		}
		f := store.TodoFilter{Limit: DefaultListLimit}
		status := "all"
		if args.Status != nil {
			status = strings.ToLower(strings.TrimSpace(*args.Status))
		}
		switch status {
		case "all", "":
			status = "all"
		case "pending":
			f.IsComplete = new(false)
		case "completed":
			f.IsComplete = new(true)
		default:
			return Result{}, store.FieldError("status", "status must be all, pending or completed")
		}
		if args.Limit != nil {
			if *args.Limit < 1 || *args.Limit > maxListLimit {
				return Result{}, store.FieldError("limit", "limit must be between 1 and %d, got %d", maxListLimit, *args.Limit)
			}
			f.Limit = *args.Limit
		}
		todos, total, err := t.List(ctx, userID, f)
		if err != nil {
			return Result{}, fmt.Errorf("list_tasks: %w", err)
		}
		list := TaskList{Tasks: make([]Task, len(todos)), Total: total}
		for i, todo := range todos {
			list.Tasks[i] = taskOf(todo)
		}
		return Result{Text: listSummary(status, len(todos), total), Data: list}, nil
	}
}

func listSummary(status string, n, total int) string {
	kind := "tasks"
	if status != "all" {
		kind = status + " tasks"
	}
	switch {
	case total == 0:
		return fmt.Sprintf("No %s.", kind)
	case n < total:
		return fmt.Sprintf("Showing the newest %d of %d %s.", n, total, kind)
	case total == 1:
		return fmt.Sprintf("1 %s.", strings.TrimSuffix(kind, "s"))
	}
	return fmt.Sprintf("%d %s.", total, kind)
}

func completeTask(t Todos) runFunc {
	return func(ctx context.Context, userID string, raw json.RawMessage) (Result, error) {
		var args struct {
			TaskID    *string `json:"task_id"`
			Completed *bool   `json:"completed"`
		}
		if err := decodeArgs(raw, &args); err != nil {
			return Result{}, err
		}
		id, err := parseTaskID(args.TaskID)
		if err != nil {
			return Result{}, err
		}
		completed := args.Completed == nil || *args.Completed
		todo, err := t.Update(ctx, userID, id, store.TodoUpdate{IsComplete: &completed})
		if err != nil {
			return Result{}, taskError("complete_task", err)
		}
		if completed {
			return Result{Text: fmt.Sprintf("Completed task %q.", todo.Title), Data: change(StatusCompleted, todo)}, nil
		}
		return Result{Text: fmt.Sprintf("Reopened task %q.", todo.Title), Data: change(StatusReopened, todo)}, nil
	}
}

func deleteTask(t Todos) runFunc {
	return func(ctx context.Context, userID string, raw json.RawMessage) (Result, error) {
		var args struct {
			TaskID *string `json:"task_id"`
		}
		if err := decodeArgs(raw, &args); err != nil {
			return Result{}, err
		}
		id, err := parseTaskID(args.TaskID)
		if err != nil {
			return Result{}, err
		}
		todo, err := t.Delete(ctx, userID, id)
		if err != nil {
			return Result{}, taskError("delete_task", err)
		}
		return Result{Text: fmt.Sprintf("Deleted task %q.", todo.Title), Data: change(StatusDeleted, todo)}, nil
	}
}

func updateTask(t Todos) runFunc {
	return func(ctx context.Context, userID string, raw json.RawMessage) (Result, error) {
		var args struct {
			TaskID      *string `json:"task_id"`
			Title       *string `json:"title"`
			Description *string `json:"description"`
		}
		if err := decodeArgs(raw, &args); err != nil {
			return Result{}, err
		}
		id, err := parseTaskID(args.TaskID)
		if err != nil {
			return Result{}, err
		}
		if args.Title == nil && args.Description == nil {
			return Result{}, store.Errorf(store.CodeInvalid, "give a new title or description (or both)")
		}
		todo, err := t.Update(ctx, userID, id, store.TodoUpdate{Title: args.Title, Description: args.Description})
		if err != nil {
			return Result{}, taskError("update_task", err)
		}
		return Result{Text: fmt.Sprintf("Updated task %q.", todo.Title), Data: change(StatusUpdated, todo)}, nil
	}
}

// runFunc is the signature of Tool.Run.
type runFunc = func(ctx context.Context, userID string, args json.RawMessage) (Result, error)

// requireUser refuses to run without a user.
func requireUser(run runFunc) runFunc {
	return func(ctx context.Context, userID string, args json.RawMessage) (Result, error) {
		if userID == "" {
			return Result{}, errNoUser
		}
		return run(ctx, userID, args)
	}
}

// errNoUser guards against a caller that lost the authenticated user: the
// user is never taken from the arguments.
var errNoUser = store.Errorf(store.CodeUnauthorized, "no authenticated user")

// errTaskNotFound is the answer for a task that does not exist and for one
// of another user alike.
var errTaskNotFound = &store.Error{Code: store.CodeNotFound, Message: "task not found", Field: "task_id"}

// taskError words the store's not-found in the tools' terms.
func taskError(tool string, err error) error {
	if store.ErrorCode(err) == store.CodeNotFound {
		return errTaskNotFound
	}
	return fmt.Errorf("%s: %w", tool, err)
}

// parseTaskID checks a task_id argument and returns its canonical form.
func parseTaskID(id *string) (string, error) {
	if id == nil {
		return "", store.FieldError("task_id", "task_id is required")
	}
	u, err := uuid.Parse(strings.TrimSpace(*id))
	if err != nil || len(strings.TrimSpace(*id)) != 36 {
		return "", store.FieldError("task_id", "task_id must be a task's id (a UUID such as 0b0e8f5c-3f7c-4a5e-9d3a-2a1f6c9e4b7d), as add_task and list_tasks return it")
	}
	return u.String(), nil
}

// decodeArgs reads the arguments object into v. Unknown fields (user_id
// included) are ignored; a value of the wrong type names its field.
func decodeArgs(raw json.RawMessage, v any) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		raw = []byte("{}")
	}
	err := json.Unmarshal(raw, v)
	var typeErr *json.UnmarshalTypeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &typeErr) && typeErr.Field != "":
		return store.FieldError(typeErr.Field, "%s must be %s, got %s", typeErr.Field, jsonType(typeErr.Type), typeErr.Value)
	case errors.As(err, &typeErr):
		return store.Errorf(store.CodeBadRequest, "arguments must be a JSON object, got %s", typeErr.Value)
	}
	return store.Errorf(store.CodeBadRequest, "arguments are not valid JSON: %v", err)
}

// jsonType names the JSON type of a Go type for error messages.
func jsonType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean (true or false)"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	}
	return "a " + t.Kind().String()
}
