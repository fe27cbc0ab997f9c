package app

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/gofiber/fiber/v2"

	"github.com/evotodo/evo/store"
)

// TodoList is the body of GET /api/todos.
type TodoList struct {
	Todos []store.Todo `json:"todos"`
	Total int          `json:"total"`
}

func (s *Server) listTodos(c *fiber.Ctx) error {
	var f store.TodoFilter
	var err error
	if f.Skip, err = queryInt(c, "skip", 0); err != nil {
		return err
	}
	if f.Limit, err = queryInt(c, "limit", store.DefaultListLimit); err != nil {
		return err
	}
	if v := c.Query("is_complete"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return store.FieldError("is_complete", "is_complete must be true or false, got %q", v)
		}
		f.IsComplete = &b
	}
	if f.Limit == 0 {
		return store.FieldError("limit", "limit must be between 1 and %d", store.MaxListLimit)
	}
	todos, total, err := s.todos.List(c.UserContext(), userID(c), f)
	if err != nil {
		return err
	}
	if todos == nil {
		todos = []store.Todo{}
	}
	return c.JSON(TodoList{Todos: todos, Total: total})
}

// queryInt reads an integer query parameter.
func queryInt(c *fiber.Ctx, name string, def int) (int, error) {
	v := c.Query(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, store.FieldError(name, "%s must be an integer, got %q", name, v)
	}
	return n, nil
}

func (s *Server) getTodo(c *fiber.Ctx) error {
	t, err := s.todos.Get(c.UserContext(), userID(c), c.Params("id"))
	if err != nil {
		return err
	}
	return c.JSON(t)
}

type todoBody struct {
	Title       *string `json:"title"`
	Description *string `json:"description"`
	IsComplete  *bool   `json:"is_complete"`
}

func (s *Server) createTodo(c *fiber.Ctx) error {
	var in todoBody
	if err := decodeJSON(c.Body(), &in); err != nil {
		return err
	}
	if in.Title == nil {
		return store.FieldError("title", "title is required")
	}
	t, err := s.todos.Create(c.UserContext(), userID(c), store.TodoCreate{Title: *in.Title, Description: in.Description})
	if errors.Is(err, store.ErrUserNotFound) {
		// Deleted within the verifier's user cache TTL: refused like its token.
		s.verifier.ForgetUser(userID(c))
		return s.challenge(c, store.Errorf(store.CodeUnauthorized, "token user does not exist"))
	}
	if err != nil {
		return err
	}
	return c.Status(fiber.StatusCreated).JSON(t)
}

func (s *Server) updateTodo(c *fiber.Ctx) error {
	var in todoBody
	if err := decodeJSON(c.Body(), &in); err != nil {
		return err
	}
	t, err := s.todos.Update(c.UserContext(), userID(c), c.Params("id"),
		store.TodoUpdate{Title: in.Title, Description: in.Description, IsComplete: in.IsComplete})
	if err != nil {
		return err
	}
	return c.JSON(t)
}

func (s *Server) toggleTodo(c *fiber.Ctx) error {
	var in struct {
		IsComplete *bool `json:"is_complete"`
	}
	if err := decodeJSON(c.Body(), &in); err != nil {
		return err
	}
	if in.IsComplete == nil {
		return store.FieldError("is_complete", "is_complete is required (true or false)")
	}
	t, err := s.todos.Update(c.UserContext(), userID(c), c.Params("id"), store.TodoUpdate{IsComplete: in.IsComplete})
	if err != nil {
		return err
	}
	return c.JSON(t)
}

func (s *Server) deleteTodo(c *fiber.Ctx) error {
	if _, err := s.todos.Delete(c.UserContext(), userID(c), c.Params("id")); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

// decodeJSON reads a JSON object into v. Unknown fields are ignored, as the
// seed did; a value of the wrong type names its field.
func decodeJSON(body []byte, v any) error {
	switch trimmed := bytes.TrimSpace(body); {
	case len(trimmed) == 0:
		return store.Errorf(store.CodeBadRequest, "request body must be a JSON object")
	case string(trimmed) == "null": // json.Unmarshal takes it for an empty object
		return store.Errorf(store.CodeBadRequest, "request body must be a JSON object, got null")
	}
	err := json.Unmarshal(body, v)
	var typeErr *json.UnmarshalTypeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &typeErr) && typeErr.Field != "":
		return store.FieldError(typeErr.Field, "%s must be of type %s, got %s", typeErr.Field, jsonType(typeErr.Type.Kind().String()), typeErr.Value)
	case errors.As(err, &typeErr):
		return store.Errorf(store.CodeBadRequest, "request body must be a JSON object, got %s", typeErr.Value)
	}
	return store.Errorf(store.CodeBadRequest, "malformed JSON: %v", err)
}

func jsonType(kind string) string {
	switch kind {
	case "ptr", "string":
		return "string"
	case "bool":
		return "boolean"
	}
	return kind
}
