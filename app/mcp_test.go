package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/evotodo/evo/agent"
	"github.com/evotodo/evo/store"
	"github.com/evotodo/evo/store/storetest"
)

// mcpConnect opens an initialized MCP client acting with token and returns
// it with a func that closes it (and waits for its server, if any).
type mcpConnect func(t *testing.T, token string) (*client.Client, func())

func mcpInitialize(t *testing.T, c *client.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	req := mcp.InitializeRequest{}
	req.Params.ClientInfo = mcp.Implementation{Name: "evo-test", Version: "1"}
	res, err := c.Initialize(ctx, req)
	if err != nil {
		t.Fatalf("initialize: %v", err)
	}
	if res.ServerInfo.Name != "evo" || res.Capabilities.Tools == nil {
		t.Fatalf("initialize: got %+v", res)
	}
}

// mcpHTTP connects to ts's /mcp with a bearer token. legacy pins the
// initialize handshake (protocol 2025-11-25 and before, what most clients
// speak today); otherwise the client negotiates the sessionless protocol.
func mcpHTTP(ts *testServer, legacy bool) mcpConnect {
	return func(t *testing.T, token string) (*client.Client, func()) {
		t.Helper()
		tr, err := transport.NewStreamableHTTP(ts.URL+"/mcp",
			transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer " + token}))
		if err != nil {
			t.Fatal(err)
		}
		var opts []client.ClientOption
		if legacy {
			opts = append(opts, client.WithProtocolVersion(mcp.LATEST_LEGACY_PROTOCOL_VERSION))
		}
		c := client.NewClient(tr, opts...)
		mcpInitialize(t, c)
		return c, func() { c.Close() }
	}
}

// stdoutRecorder keeps what the mcp command writes to stdout.
type stdoutRecorder struct {
	mu  sync.Mutex
	buf bytes.Buffer
	w   io.Writer
}

func (r *stdoutRecorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.buf.Write(p)
	r.mu.Unlock()
	return r.w.Write(p)
}

// checkProtocolOnly fails unless every line written is a JSON-RPC message.
func (r *stdoutRecorder) checkProtocolOnly(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	sc := bufio.NewScanner(bytes.NewReader(r.buf.Bytes()))
	sc.Buffer(nil, 1<<20)
	n := 0
	for sc.Scan() {
		var msg struct {
			JSONRPC string `json:"jsonrpc"`
		}
		if err := json.Unmarshal(sc.Bytes(), &msg); err != nil || msg.JSONRPC != "2.0" {
			t.Fatalf("stdout has a line that is not JSON-RPC: %q", sc.Text())
		}
		n++
	}
	if n == 0 {
		t.Fatal("nothing on stdout")
	}
}

// mcpStdio runs the mcp command in-process with cfg and args, its stdin and
// stdout piped to an mcp-go client. env is its environment (EVO_TOKEN).
func mcpStdio(t *testing.T, cfg Config, env map[string]string, args ...string) (*client.Client, func()) {
	t.Helper()
	inR, inW := io.Pipe()   // client -> command's stdin
	outR, outW := io.Pipe() // command's stdout -> client
	out := &stdoutRecorder{w: outW}
	done := make(chan error, 1)
	go func() {
		err := runMCP(context.Background(), cfg, storetest.Quiet(), args, func(k string) string { return env[k] },
			inR, out, io.Discard)
		outW.Close()
		inR.Close()
		done <- err
	}()
	c := client.NewClient(transport.NewIO(outR, inW, nil))
	mcpInitialize(t, c)
	return c, func() {
		c.Close() // closes the command's stdin: it must end cleanly
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("mcp command: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("mcp command did not end after stdin closed")
		}
		out.checkProtocolOnly(t)
	}
}

// mcpCall calls a tool; a transport or protocol error fails the test.
func mcpCall(t *testing.T, c *client.Client, name string, args any) *mcp.CallToolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := mcp.CallToolRequest{}
	req.Params.Name, req.Params.Arguments = name, args
	res, err := c.CallTool(ctx, req)
	if err != nil {
		t.Fatalf("call %s: %v", name, err)
	}
	return res
}

// mcpText returns the result's first text content.
func mcpText(t *testing.T, res *mcp.CallToolResult) string {
	t.Helper()
	if len(res.Content) == 0 {
		t.Fatal("result has no content")
	}
	tc, ok := mcp.AsTextContent(res.Content[0])
	if !ok {
		t.Fatalf("content %T is not text", res.Content[0])
	}
	return tc.Text
}

// mcpOK calls a tool that must succeed and decodes its structured content.
func mcpOK[T any](t *testing.T, c *client.Client, name string, args any) T {
	t.Helper()
	res := mcpCall(t, c, name, args)
	if res.IsError {
		t.Fatalf("call %s %v: got error %q", name, args, mcpText(t, res))
	}
	data := []byte(res.RawStructuredContent)
	if len(data) == 0 {
		var err error
		if data, err = json.Marshal(res.StructuredContent); err != nil {
			t.Fatal(err)
		}
	}
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("call %s: structured content %s: %v", name, data, err)
	}
	return v
}

// mcpErr calls a tool that must fail with a tool error reading want.
func mcpErr(t *testing.T, c *client.Client, name string, args any, want string) {
	t.Helper()
	res := mcpCall(t, c, name, args)
	if got := mcpText(t, res); !res.IsError || got != want {
		t.Fatalf("call %s: got isError=%v %q, want tool error %q", name, res.IsError, got, want)
	}
}

// restTodos returns the user's todos through the REST API.
func restTodos(t *testing.T, ts *testServer, token string) TodoList {
	t.Helper()
	status, data := ts.do(t, http.MethodGet, "/api/todos", token, nil)
	if status != http.StatusOK {
		t.Fatalf("GET /api/todos: %d %s", status, data)
	}
	return decode[TodoList](t, data)
}

// eventTypes returns the types of the user's logged events, in seq order.
func eventTypes(t *testing.T, ts *testServer, userID string) []string {
	t.Helper()
	evs, err := ts.srv.db.EventsSince(context.Background(), userID, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, ev := range evs {
		types = append(types, ev.Type)
	}
	return types
}

// testMCPTools drives the five tools through connect as two users of ts,
// one client at a time, and checks what the REST API and the event log
// see.
func testMCPTools(t *testing.T, ts *testServer, connect mcpConnect) {
	a, tokA := ts.user(t)
	b, tokB := ts.user(t)
	var kept, done agent.Change

	t.Run("UserA", func(t *testing.T) {
		c, closeClient := connect(t, tokA)
		defer closeClient()

		res, err := c.ListTools(context.Background(), mcp.ListToolsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range agent.Tools(nil) {
			i := slices.IndexFunc(res.Tools, func(tl mcp.Tool) bool { return tl.Name == want.Name })
			if i < 0 {
				t.Fatalf("tool %s not listed", want.Name)
			}
			if got := mcpSchema(t, res.Tools[i]); !mcpSameJSON(t, got, want.Schema) {
				t.Errorf("%s: got schema %s, want %s", want.Name, got, want.Schema)
			}
		}
		if len(res.Tools) != 5 {
			t.Fatalf("got %d tools, want 5", len(res.Tools))
		}

		kept = mcpOK[agent.Change](t, c, "add_task", map[string]any{"title": "Buy milk", "description": "2 litres"})
		if kept.Status != agent.StatusCreated || kept.Title != "Buy milk" || kept.Task.Description == nil {
			t.Fatalf("add_task: got %+v", kept)
		}
		if got := mcpText(t, mcpCall(t, c, "add_task", map[string]any{"title": "Walk the dog"})); got != `Created task "Walk the dog".` {
			t.Errorf("add_task text: got %q", got)
		}
		list := mcpOK[agent.TaskList](t, c, "list_tasks", map[string]any{})
		if list.Total != 2 || len(list.Tasks) != 2 || list.Tasks[1].ID != kept.TaskID {
			t.Fatalf("list_tasks: got %+v", list)
		}
		dog := list.Tasks[0]
		done = mcpOK[agent.Change](t, c, "complete_task", map[string]any{"task_id": dog.ID})
		if done.Status != agent.StatusCompleted || !done.Task.Completed {
			t.Fatalf("complete_task: got %+v", done)
		}
		if l := mcpOK[agent.TaskList](t, c, "list_tasks", map[string]any{"status": "pending"}); l.Total != 1 || l.Tasks[0].ID != kept.TaskID {
			t.Fatalf("pending: got %+v", l)
		}
		if l := mcpOK[agent.TaskList](t, c, "list_tasks", map[string]any{"status": "completed", "limit": 1}); l.Total != 1 || l.Tasks[0].ID != dog.ID {
			t.Fatalf("completed: got %+v", l)
		}
		reopened := mcpOK[agent.Change](t, c, "complete_task", map[string]any{"task_id": dog.ID, "completed": false})
		if reopened.Status != agent.StatusReopened || reopened.Task.Completed {
			t.Fatalf("reopen: got %+v", reopened)
		}
		done = mcpOK[agent.Change](t, c, "complete_task", map[string]any{"task_id": dog.ID, "completed": true})
		updated := mcpOK[agent.Change](t, c, "update_task", map[string]any{"task_id": kept.TaskID, "title": "Buy oat milk"})
		if updated.Status != agent.StatusUpdated || updated.Title != "Buy oat milk" || *updated.Task.Description != "2 litres" {
			t.Fatalf("update_task: got %+v", updated)
		}
		gone := mcpOK[agent.Change](t, c, "add_task", map[string]any{"title": "Temporary"})
		if d := mcpOK[agent.Change](t, c, "delete_task", map[string]any{"task_id": gone.TaskID}); d.Status != agent.StatusDeleted || d.Title != "Temporary" {
			t.Fatalf("delete_task: got %+v", d)
		}

		// Bad arguments: tool errors with the store's codes, nothing changes.
		mcpErr(t, c, "add_task", map[string]any{"description": "no title"}, "invalid: title is required")
		mcpErr(t, c, "add_task", map[string]any{"title": strings.Repeat("a", 501)}, "invalid: title must be at most 500 characters, got 501")
		mcpErr(t, c, "add_task", map[string]any{"title": "x", "description": strings.Repeat("d", 2001)}, "invalid: description must be at most 2000 characters, got 2001")
		mcpErr(t, c, "add_task", map[string]any{"title": 42}, "invalid: title must be a string, got number")
		mcpErr(t, c, "list_tasks", map[string]any{"status": "done"}, "invalid: status must be all, pending or completed")
		mcpErr(t, c, "list_tasks", map[string]any{"limit": 5000}, "invalid: limit must be between 1 and 1000, got 5000")
		for _, tool := range []string{"complete_task", "update_task", "delete_task"} {
			mcpErr(t, c, tool, map[string]any{"title": "x"}, "invalid: task_id is required")
			mcpErr(t, c, tool, map[string]any{"task_id": "1", "title": "x"},
				"invalid: task_id must be a task's id (a UUID such as 0b0e8f5c-3f7c-4a5e-9d3a-2a1f6c9e4b7d), as add_task and list_tasks return it")
			mcpErr(t, c, tool, map[string]any{"task_id": uuid.NewString(), "title": "x"}, "not_found: task not found")
		}
		mcpErr(t, c, "update_task", map[string]any{"task_id": kept.TaskID}, "invalid: give a new title or description (or both)")
		mcpErr(t, c, "update_task", map[string]any{"task_id": kept.TaskID, "title": " "}, "invalid: title must not be empty or only whitespace")

		// Every change is in the REST list and in the event log.
		rest := restTodos(t, ts, tokA)
		if rest.Total != 2 || rest.Todos[0].ID != dog.ID || !rest.Todos[0].IsComplete ||
			rest.Todos[1].ID != kept.TaskID || rest.Todos[1].Title != "Buy oat milk" {
			t.Fatalf("REST list: got %+v", rest)
		}
		created, updatedEv, deleted := store.EventTodoCreated, store.EventTodoUpdated, store.EventTodoDeleted
		want := []string{created, created, updatedEv, updatedEv, updatedEv, updatedEv, created, deleted}
		if got := eventTypes(t, ts, a.ID); !slices.Equal(got, want) {
			t.Fatalf("event log: got %v, want %v", got, want)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("UserBCannotSeeOrTouchA", func(t *testing.T) {
		c, closeClient := connect(t, tokB)
		defer closeClient()
		if l := mcpOK[agent.TaskList](t, c, "list_tasks", map[string]any{"user_id": a.ID}); l.Total != 0 || len(l.Tasks) != 0 {
			t.Fatalf("B lists %+v", l)
		}
		for _, id := range []string{kept.TaskID, done.TaskID} {
			mcpErr(t, c, "complete_task", map[string]any{"task_id": id, "user_id": a.ID}, "not_found: task not found")
			mcpErr(t, c, "complete_task", map[string]any{"task_id": id, "completed": false}, "not_found: task not found")
			mcpErr(t, c, "update_task", map[string]any{"task_id": id, "title": "pwned", "user_id": a.ID}, "not_found: task not found")
			mcpErr(t, c, "delete_task", map[string]any{"task_id": id, "user_id": a.ID}, "not_found: task not found")
		}
		mine := mcpOK[agent.Change](t, c, "add_task", map[string]any{"title": "B's own", "user_id": a.ID})
		if rest := restTodos(t, ts, tokB); rest.Total != 1 || rest.Todos[0].ID != mine.TaskID {
			t.Fatalf("B's REST list: got %+v", rest)
		}
		if got := eventTypes(t, ts, b.ID); !slices.Equal(got, []string{store.EventTodoCreated}) {
			t.Fatalf("B's event log: got %v", got)
		}
	})

	rest := restTodos(t, ts, tokA)
	if rest.Total != 2 || rest.Todos[0].Title != "Walk the dog" || !rest.Todos[0].IsComplete || rest.Todos[1].Title != "Buy oat milk" {
		t.Fatalf("A's todos changed: %+v", rest)
	}
	if got := len(eventTypes(t, ts, a.ID)); got != 8 {
		t.Fatalf("A has %d events, want 8", got)
	}
}

func TestMCPHTTP(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			ts := startServer(t, backend, nil)
			t.Run("Legacy", func(t *testing.T) { testMCPTools(t, ts, mcpHTTP(ts, true)) })
			t.Run("Sessionless", func(t *testing.T) { testMCPTools(t, ts, mcpHTTP(ts, false)) })
		})
	}
}

func TestMCPStdio(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			// The command shares the server's store and trusts the same
			// issuer, as a production deployment would.
			ts := startServer(t, backend, nil)
			testMCPTools(t, ts, func(t *testing.T, token string) (*client.Client, func()) {
				return mcpStdio(t, ts.srv.cfg, nil, "--token", token)
			})
		})
	}
}

// mcpPost posts a JSON-RPC message to /mcp.
func mcpPost(t *testing.T, ts *testServer, header map[string]string, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, ts.URL+"/mcp", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	if h := header["Host"]; h != "" {
		req.Host = h
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, data
}

const mcpInitializeBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}`

func TestMCPHTTPAuth(t *testing.T) {
	ts := startServer(t, "sqlite", nil)
	_, token := ts.user(t)

	for _, tc := range []struct {
		name, authz, detail string
	}{
		{"NoToken", "", "missing Authorization header"},
		{"NotBearer", "Basic dTpw", `Authorization header must be "Bearer <token>"`},
		{"BadToken", "Bearer not.a.jwt", ""},
		{"ForeignToken", "Bearer " + token[:len(token)-4] + "AAAA", ""},
	} {
		t.Run("401"+tc.name, func(t *testing.T) {
			header := map[string]string{}
			if tc.authz != "" {
				header["Authorization"] = tc.authz
			}
			status, h, data := mcpPost(t, ts, header, mcpInitializeBody)
			body := decode[ErrorBody](t, data)
			if status != http.StatusUnauthorized || body.Code != store.CodeUnauthorized || (tc.detail != "" && body.Detail != tc.detail) {
				t.Fatalf("got %d %s", status, data)
			}
			if !strings.HasPrefix(h.Get("Content-Type"), "application/json") || !strings.Contains(h.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("got headers %v", h)
			}
		})
	}
	t.Run("401ClientWithoutToken", func(t *testing.T) {
		tr, err := transport.NewStreamableHTTP(ts.URL + "/mcp")
		if err != nil {
			t.Fatal(err)
		}
		c := client.NewClient(tr)
		defer c.Close()
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Initialize(context.Background(), mcp.InitializeRequest{}); err == nil {
			t.Fatal("initialize without a token succeeded")
		}
	})
	t.Run("OKStatelessJSON", func(t *testing.T) {
		// Behind a proxy on the same host, requests arrive on loopback with
		// the public Host: they must not be refused as DNS rebinding.
		status, h, data := mcpPost(t, ts, map[string]string{"Authorization": "Bearer " + token, "Host": "evo.example.com"}, mcpInitializeBody)
		if status != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
			t.Fatalf("got %d %v %s", status, h, data)
		}
		if sid := h.Get("Mcp-Session-Id"); sid != "" {
			t.Fatalf("got session id %q from a stateless server", sid)
		}
		var res struct {
			Result mcp.InitializeResult `json:"result"`
		}
		if err := json.Unmarshal(data, &res); err != nil || res.Result.ServerInfo.Name != "evo" {
			t.Fatalf("got %s (%v)", data, err)
		}
	})
	t.Run("405GetStream", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodGet, ts.URL+"/mcp", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Accept", "text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST, DELETE" {
			t.Fatalf("GET /mcp: got %d Allow %q, want 405 Allow \"POST, DELETE\"", resp.StatusCode, resp.Header.Get("Allow"))
		}
		if status, _ := ts.do(t, http.MethodGet, "/mcp", "", nil); status != http.StatusUnauthorized {
			t.Fatalf("GET /mcp without a token: got %d, want 401", status)
		}
	})
	t.Run("400NotJSON", func(t *testing.T) {
		status, _, _ := mcpPost(t, ts, map[string]string{"Authorization": "Bearer " + token, "Content-Type": "text/plain"}, mcpInitializeBody)
		if status != http.StatusBadRequest {
			t.Fatalf("got %d, want 400", status)
		}
	})
	t.Run("503JWKSDown", func(t *testing.T) {
		ts := startServer(t, "sqlite", nil)
		_, token := ts.user(t)
		ts.JWKS.down.Store(true)
		status, _, data := mcpPost(t, ts, map[string]string{"Authorization": "Bearer " + token}, mcpInitializeBody)
		if body := decode[ErrorBody](t, data); status != http.StatusServiceUnavailable || body.Code != store.CodeUnavailable {
			t.Fatalf("got %d %s", status, data)
		}
	})
}

// devConfig is the configuration of an embedded, dev-mode Evo in a fresh
// DATA_DIR, with extra variables on top.
func devConfig(t *testing.T, extra map[string]string) Config {
	t.Helper()
	vars := map[string]string{"ENVIRONMENT": "test", "DATA_DIR": t.TempDir()}
	for k, v := range extra {
		vars[k] = v
	}
	cfg, err := LoadConfig(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// devToken runs `evo token` against cfg's DATA_DIR and returns the token.
func devToken(t *testing.T, cfg Config, email, ttl string) string {
	t.Helper()
	vars := map[string]string{"ENVIRONMENT": "test", "DATA_DIR": cfg.DataDir, "JWT_LEEWAY": cfg.JWTLeeway.String()}
	var stdout bytes.Buffer
	if err := Run(context.Background(), []string{"token", "--email", email, "--ttl", ttl},
		func(k string) string { return vars[k] }, &stdout, io.Discard); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(stdout.String())
}

func TestMCPStdioDevMode(t *testing.T) {
	t.Run("Email", func(t *testing.T) {
		cfg := devConfig(t, nil)
		c, closeClient := mcpStdio(t, cfg, nil, "--email", "ada@example.com")
		added := mcpOK[agent.Change](t, c, "add_task", map[string]any{"title": "From stdio"})
		closeClient()
		// The same email is the same user next time.
		c, closeClient = mcpStdio(t, cfg, nil, "--email", "ada@example.com")
		defer closeClient()
		if l := mcpOK[agent.TaskList](t, c, "list_tasks", nil); l.Total != 1 || l.Tasks[0].ID != added.TaskID {
			t.Fatalf("got %+v", l)
		}
	})
	t.Run("TokenWithoutServer", func(t *testing.T) {
		// No server runs, so its JWKS route does not either: the command
		// still verifies a dev token, and EVO_TOKEN works like --token.
		cfg := devConfig(t, nil)
		token := devToken(t, cfg, "bob@example.com", "1h")
		c, closeClient := mcpStdio(t, cfg, map[string]string{"EVO_TOKEN": token})
		defer closeClient()
		mcpOK[agent.Change](t, c, "add_task", map[string]any{"title": "From EVO_TOKEN"})
	})
	t.Run("TokenExpiresMidSession", func(t *testing.T) {
		cfg := devConfig(t, map[string]string{"JWT_LEEWAY": "0s"})
		token := devToken(t, cfg, "eve@example.com", "2s")
		c, closeClient := mcpStdio(t, cfg, nil, "--token", token)
		defer closeClient()
		mcpOK[agent.TaskList](t, c, "list_tasks", nil)
		time.Sleep(3 * time.Second)
		mcpErr(t, c, "list_tasks", nil, "unauthorized: token has expired")
	})
}

func TestMCPStdioRefusesToStart(t *testing.T) {
	dev := devConfig(t, nil)
	ts := startServer(t, "sqlite", nil)
	devTok := devToken(t, dev, "carol@example.com", "1h")
	for _, tc := range []struct {
		name string
		cfg  Config
		args []string
		want string
	}{
		{"NoUser", dev, nil, "--token JWT (or EVO_TOKEN) is required"},
		{"TokenAndEmail", dev, []string{"--token", devTok, "--email", "x@example.com"}, "not both"},
		{"EmailOutsideDevMode", ts.srv.cfg, []string{"--email", "x@example.com"}, "only in dev mode"},
		{"BadToken", dev, []string{"--token", "not-a-token"}, "unauthorized"},
		{"DevTokenInProduction", ts.srv.cfg, []string{"--token", devTok}, "unauthorized"},
		{"UnknownFlag", dev, []string{"--user", "x"}, "flag provided but not defined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout bytes.Buffer
			err := runMCP(context.Background(), tc.cfg, storetest.Quiet(), tc.args, func(string) string { return "" },
				strings.NewReader(""), &stdout, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if stdout.Len() != 0 {
				t.Fatalf("wrote %q to stdout", stdout.String())
			}
		})
	}
	t.Run("ThroughRun", func(t *testing.T) {
		var stdout bytes.Buffer
		vars := map[string]string{"ENVIRONMENT": "test", "DATA_DIR": t.TempDir()}
		err := Run(context.Background(), []string{"mcp"}, func(k string) string { return vars[k] }, &stdout, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "--token") || stdout.Len() != 0 {
			t.Fatalf("got %v, stdout %q", err, stdout.String())
		}
	})
}

// mcpSchema returns a listed tool's input schema as JSON; the client decodes
// it into a struct, which adds an empty "required": that is dropped.
func mcpSchema(t *testing.T, tool mcp.Tool) []byte {
	t.Helper()
	if len(tool.RawInputSchema) > 0 {
		return tool.RawInputSchema
	}
	data, err := json.Marshal(tool.InputSchema)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	if r, ok := m["required"].([]any); ok && len(r) == 0 {
		delete(m, "required")
	}
	data, _ = json.Marshal(m)
	return data
}

// mcpSameJSON reports whether a and b encode the same value.
func mcpSameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return bytes.Equal(ja, jb)
}

// TestMCPChangesReachSockets: a change made by an MCP tool goes through the
// one change path, so it reaches the user's open socket as a todo.* frame.
func TestMCPChangesReachSockets(t *testing.T) {
	ts := startServer(t, "sqlite", nil)
	_, tok := ts.user(t)
	ws := dialWS(t, ts, tok)
	ws.expectType("hello")
	ws.resume(0)

	c, done := mcpHTTP(ts, false)(t, tok)
	defer done()
	added := mcpOK[agent.Change](t, c, "add_task", map[string]string{"title": "from an MCP client"})
	if f := ws.expectType(store.EventTodoCreated); f.Seq != 1 || f.Todo.ID != added.TaskID || f.Todo.Title != "from an MCP client" {
		t.Fatalf("after add_task: got %+v", f)
	}
	mcpOK[agent.Change](t, c, "complete_task", map[string]string{"task_id": added.TaskID})
	if f := ws.expectType(store.EventTodoUpdated); f.Seq != 2 || !f.Todo.IsComplete {
		t.Fatalf("after complete_task: got %+v", f)
	}
	mcpOK[agent.Change](t, c, "delete_task", map[string]string{"task_id": added.TaskID})
	if f := ws.expectType(store.EventTodoDeleted); f.Seq != 3 || f.Todo.ID != added.TaskID {
		t.Fatalf("after delete_task: got %+v", f)
	}
}
