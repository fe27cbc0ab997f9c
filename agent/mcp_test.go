package agent

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/evotodo/evo/store"
	"github.com/evotodo/evo/store/storetest"
)

// inProcessClient returns an initialized mcp-go client of an MCP server
// offering tools.
func inProcessClient(t *testing.T, tools []Tool) *client.Client {
	t.Helper()
	c, err := client.NewInProcessClient(NewMCPServer(tools, "test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx := context.Background()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ClientInfo = mcp.Implementation{Name: "evo-test", Version: "1"}
	res, err := c.Initialize(ctx, init)
	if err != nil {
		t.Fatal(err)
	}
	if res.ServerInfo.Name != "evo" || res.ServerInfo.Version != "test" || res.Capabilities.Tools == nil {
		t.Fatalf("initialize: got %+v", res)
	}
	return c
}

func callTool(t *testing.T, ctx context.Context, c *client.Client, name string, args any) *mcp.CallToolResult {
	t.Helper()
	req := mcp.CallToolRequest{}
	req.Params.Name, req.Params.Arguments = name, args
	res, err := c.CallTool(ctx, req)
	if err != nil {
		t.Fatalf("call %s: %v", name, err)
	}
	return res
}

// texts returns the text contents of a result.
func texts(t *testing.T, res *mcp.CallToolResult) []string {
	t.Helper()
	var out []string
	for _, c := range res.Content {
		tc, ok := mcp.AsTextContent(c)
		if !ok {
			t.Fatalf("content %T is not text", c)
		}
		out = append(out, tc.Text)
	}
	return out
}

// structured decodes a result's structured content into a new T.
func structured[T any](t *testing.T, res *mcp.CallToolResult) T {
	t.Helper()
	data := []byte(res.RawStructuredContent)
	if len(data) == 0 {
		var err error
		if data, err = json.Marshal(res.StructuredContent); err != nil {
			t.Fatal(err)
		}
	}
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("structured content %s: %v", data, err)
	}
	return v
}

func TestMCPServer(t *testing.T) {
	db := storetest.SQLite(t)
	user := storetest.User(t, db).ID
	tools := Tools(store.NewTodos(db, nil))
	c := inProcessClient(t, tools)
	ctx := WithUser(context.Background(), user)

	t.Run("ListTools", func(t *testing.T) {
		res, err := c.ListTools(ctx, mcp.ListToolsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Tools) != len(tools) {
			t.Fatalf("got %d tools, want %d", len(res.Tools), len(tools))
		}
		for _, want := range tools {
			i := slices.IndexFunc(res.Tools, func(tl mcp.Tool) bool { return tl.Name == want.Name })
			if i < 0 {
				t.Errorf("tool %s not listed", want.Name)
				continue
			}
			got := res.Tools[i]
			if got.Description != want.Description {
				t.Errorf("%s: got description %q", got.Name, got.Description)
			}
			if gotSchema := schemaJSON(t, got); !sameJSON(t, gotSchema, want.Schema) {
				t.Errorf("%s: got schema %s, want %s", got.Name, gotSchema, want.Schema)
			}
			if ro := got.Annotations.ReadOnlyHint; ro == nil || *ro != want.ReadOnly {
				t.Errorf("%s: readOnlyHint %v", got.Name, ro)
			}
			if d := got.Annotations.DestructiveHint; d == nil || *d != want.Destructive {
				t.Errorf("%s: destructiveHint %v", got.Name, d)
			}
		}
	})
	t.Run("OK", func(t *testing.T) {
		res := callTool(t, ctx, c, "add_task", map[string]any{"title": "Buy milk"})
		if res.IsError {
			t.Fatalf("got error %v", texts(t, res))
		}
		ch := structured[Change](t, res)
		if ch.Status != StatusCreated || ch.Title != "Buy milk" || ch.Task.ID != ch.TaskID {
			t.Fatalf("got %+v", ch)
		}
		txt := texts(t, res)
		if len(txt) != 2 || txt[0] != `Created task "Buy milk".` || !sameJSON(t, []byte(txt[1]), mustJSON(t, ch)) {
			t.Fatalf("got texts %q", txt)
		}
	})
	t.Run("ErrInvalid", func(t *testing.T) {
		res := callTool(t, ctx, c, "add_task", map[string]any{"description": "no title"})
		if !res.IsError {
			t.Fatal("got no error")
		}
		if got := texts(t, res); len(got) != 1 || got[0] != "invalid: title is required" {
			t.Fatalf("got %q", got)
		}
		e := structured[map[string]ToolError](t, res)["error"]
		if e != (ToolError{Code: store.CodeInvalid, Message: "title is required", Field: "title"}) {
			t.Fatalf("got %+v", e)
		}
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		res := callTool(t, ctx, c, "delete_task", map[string]any{"task_id": "7a1c6f9e-0000-4000-8000-000000000000"})
		if got := texts(t, res); !res.IsError || got[0] != "not_found: task not found" {
			t.Fatalf("got %v %q", res.IsError, got)
		}
	})
	t.Run("ErrNoUser", func(t *testing.T) {
		res := callTool(t, context.Background(), c, "list_tasks", map[string]any{"user_id": user})
		if got := texts(t, res); !res.IsError || got[0] != "unauthorized: no authenticated user" {
			t.Fatalf("got %v %q", res.IsError, got)
		}
	})
	t.Run("ErrUnknownTool", func(t *testing.T) {
		req := mcp.CallToolRequest{}
		req.Params.Name = "drop_tables"
		if _, err := c.CallTool(ctx, req); err == nil {
			t.Fatal("got no error")
		}
	})
}

func TestMCPServerInternalErrors(t *testing.T) {
	tools := []Tool{
		{Name: "panics", Schema: json.RawMessage(`{"type":"object"}`),
			Run: func(context.Context, string, json.RawMessage) (Result, error) { panic("boom") }},
		{Name: "fails", Schema: json.RawMessage(`{"type":"object"}`),
			Run: func(context.Context, string, json.RawMessage) (Result, error) {
				return Result{}, context.DeadlineExceeded
			}},
		{Name: "unencodable", Schema: json.RawMessage(`{"type":"object"}`),
			Run: func(context.Context, string, json.RawMessage) (Result, error) {
				return Result{Data: map[string]any{"f": func() {}}}, nil
			}},
	}
	c := inProcessClient(t, tools)
	ctx := WithUser(context.Background(), "u1")
	for _, name := range []string{"panics", "fails", "unencodable", "panics"} {
		res := callTool(t, ctx, c, name, nil)
		if got := texts(t, res); !res.IsError || len(got) != 1 || got[0] != "internal: internal error" {
			t.Fatalf("%s: got %v %q; details must not reach the client", name, res.IsError, got)
		}
	}
}

func TestMCPUserContext(t *testing.T) {
	if _, ok := UserFrom(context.Background()); ok {
		t.Error("a bare context has a user")
	}
	if _, ok := UserFrom(WithUser(context.Background(), "")); ok {
		t.Error("an empty user counts")
	}
	if got, ok := UserFrom(WithUser(context.Background(), "u1")); !ok || got != "u1" {
		t.Errorf("got %q %v", got, ok)
	}
}

// schemaJSON returns the input schema of a listed tool as JSON. The client
// decodes it into a struct, which adds an empty "required": that is dropped.
func schemaJSON(t *testing.T, tool mcp.Tool) []byte {
	t.Helper()
	if len(tool.RawInputSchema) > 0 {
		return tool.RawInputSchema
	}
	var m map[string]any
	if err := json.Unmarshal(mustJSON(t, tool.InputSchema), &m); err != nil {
		t.Fatal(err)
	}
	if r, ok := m["required"].([]any); ok && len(r) == 0 {
		delete(m, "required")
	}
	return mustJSON(t, m)
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// sameJSON reports whether a and b encode the same value.
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return string(mustJSON(t, va)) == string(mustJSON(t, vb))
}
