package app

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"mime"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/fasthttp/websocket"
	"github.com/google/uuid"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// oasURL is the base URL the document is compiled under.
const oasURL = "https://evo.test/openapi.json"

// oas is the embedded OpenAPI document, compiled for validation with
// santhosh-tekuri/jsonschema (JSON Schema 2020-12, the document's
// jsonSchemaDialect; formats asserted). It records which documented
// responses the test saw.
type oas struct {
	doc map[string]any
	c   *jsonschema.Compiler

	mu      sync.Mutex
	schemas map[string]*jsonschema.Schema
	seen    map[string]bool // "GET /api/todos 200"
}

func loadOAS(t testing.TB) *oas {
	t.Helper()
	raw, err := jsonschema.UnmarshalJSON(bytes.NewReader(openAPIDoc))
	if err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	if err := c.AddResource(oasURL, raw); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatal(err)
	}
	return &oas{doc: doc, c: c, schemas: map[string]*jsonschema.Schema{}, seen: map[string]bool{}}
}

// pointer is the JSON pointer of the document location named by tokens.
func pointer(tokens ...string) string {
	r := strings.NewReplacer("~", "~0", "/", "~1")
	var b strings.Builder
	for _, tok := range tokens {
		b.WriteString("/" + r.Replace(tok))
	}
	return b.String()
}

// schema compiles the schema at ptr (a JSON pointer into the document).
func (o *oas) schema(t testing.TB, ptr string) *jsonschema.Schema {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	if s := o.schemas[ptr]; s != nil {
		return s
	}
	s, err := o.c.Compile(oasURL + "#" + ptr)
	if err != nil {
		t.Fatalf("compile schema %s: %v", ptr, err)
	}
	o.schemas[ptr] = s
	return s
}

// at returns the document's value at ptr, or nil.
func (o *oas) at(ptr string) any {
	var v any = o.doc
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[tok]
	}
	return v
}

// resolve follows a "$ref" of obj at ptr, returning the target and its pointer.
func (o *oas) resolve(obj map[string]any, ptr string) (map[string]any, string) {
	if ref, ok := obj["$ref"].(string); ok {
		ptr = strings.TrimPrefix(ref, "#")
		obj, _ = o.at(ptr).(map[string]any)
	}
	return obj, ptr
}

// operations returns "METHOD /path" of every documented operation, and
// those marked x-evo-dev-only.
func (o *oas) operations() (all, devOnly []string) {
	for path, item := range o.doc["paths"].(map[string]any) {
		for method, op := range item.(map[string]any) {
			key := strings.ToUpper(method) + " " + path
			all = append(all, key)
			if op.(map[string]any)["x-evo-dev-only"] == true {
				devOnly = append(devOnly, key)
			}
		}
	}
	slices.Sort(all)
	return all, devOnly
}

// check validates a real response to method on the documented path route
// (a template such as /api/todos/{id}): its status must be documented, its
// content type and body must match the documented media type's schema (an
// undocumented body fails), and the documented headers must be there.
func (o *oas) check(t testing.TB, method, route string, res *http.Response, body []byte) {
	t.Helper()
	what := fmt.Sprintf("%s %s %d", method, route, res.StatusCode)
	opPtr := pointer("paths", route, strings.ToLower(method))
	if _, ok := o.at(opPtr).(map[string]any); !ok {
		t.Fatalf("%s: the document has no operation %s", what, opPtr)
	}
	respPtr := opPtr + pointer("responses", strconv.Itoa(res.StatusCode))
	resp, _ := o.at(respPtr).(map[string]any)
	if resp == nil {
		t.Fatalf("%s: status not documented (body %.300s)", what, body)
	}
	resp, respPtr = o.resolve(resp, respPtr)
	o.mu.Lock()
	o.seen[method+" "+route+" "+strconv.Itoa(res.StatusCode)] = true
	o.mu.Unlock()

	for name := range asMap(resp["headers"]) {
		if res.Header.Get(name) == "" {
			t.Errorf("%s: documented header %s missing", what, name)
		}
	}
	content, _ := resp["content"].(map[string]any)
	if content == nil {
		if len(body) > 0 {
			t.Errorf("%s: documented without a body, got %.300s", what, body)
		}
		return
	}
	ctype, _, err := mime.ParseMediaType(res.Header.Get("Content-Type"))
	if err != nil {
		t.Fatalf("%s: Content-Type %q: %v", what, res.Header.Get("Content-Type"), err)
	}
	if _, ok := content[ctype]; !ok {
		t.Fatalf("%s: content type %s not documented (documented: %v)", what, ctype, slices.Sorted(maps.Keys(content)))
	}
	schemaPtr := respPtr + pointer("content", ctype, "schema")
	switch {
	case ctype == "application/json":
		o.validate(t, what, schemaPtr, body)
	case ctype == "text/event-stream":
		frames := sseData(t, body)
		if len(frames) == 0 {
			t.Errorf("%s: no events", what)
		}
		for _, f := range frames {
			o.validate(t, what+" event", pointer("components", "schemas", "ChatFrame"), f)
		}
	default:
		o.validate(t, what, schemaPtr, mustJSONString(body))
	}
}

// validate checks a JSON body against the schema at ptr.
func (o *oas) validate(t testing.TB, what, ptr string, body []byte) {
	t.Helper()
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s: body is not JSON: %v: %.300s", what, err, body)
	}
	if err := o.schema(t, ptr).Validate(inst); err != nil {
		t.Errorf("%s: body does not match %s: %v\nbody: %.1000s", what, ptr, err, body)
	}
}

// mustJSONString returns body as a JSON string, to validate a text body
// against a string schema.
func mustJSONString(body []byte) []byte {
	b, _ := json.Marshal(string(body))
	return b
}

// sseData returns the data of each Server-Sent Event of body, checking
// that an event's name is its frame's type.
func sseData(t testing.TB, body []byte) [][]byte {
	t.Helper()
	var out [][]byte
	var event string
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if e, ok := strings.CutPrefix(line, "event: "); ok {
			event = e
		}
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			var f struct{ Type string }
			json.Unmarshal([]byte(d), &f)
			if f.Type != event {
				t.Errorf("event %q carries a %q frame", event, f.Type)
			}
			out = append(out, []byte(d))
		}
	}
	return out
}

// call sends a request with an optional token, body and headers
// ("Name: value") and returns the response and its body.
func call(t testing.TB, ts *testServer, method, path, token string, body any, headers ...string) (*http.Response, []byte) {
	t.Helper()
	header := map[string]string{}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		header[k] = v
	}
	return roundTrip(t, ts, method, path, token, body, header)
}

// consoleAssets returns the routes of the console's files other than its
// page: static files, not part of the API (the console may add more).
func consoleAssets(t testing.TB) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	err := fs.WalkDir(web, "web", func(name string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && name != "web/index.html" {
			out["GET "+strings.TrimPrefix(name, "web")] = true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// fiberParam matches a Fiber route parameter, :name.
var fiberParam = regexp.MustCompile(`:([A-Za-z0-9_]+)`)

// servedRoutes returns "METHOD /path" of every route of ts (paths in
// OpenAPI form, /api/todos/{id}), without HEAD (Fiber adds it to every GET),
// middleware and the console's static files.
func servedRoutes(t testing.TB, ts *testServer) []string {
	t.Helper()
	assets := consoleAssets(t)
	set := map[string]bool{}
	for _, r := range ts.srv.app.GetRoutes(true) {
		key := r.Method + " " + fiberParam.ReplaceAllString(r.Path, "{$1}")
		if r.Method == http.MethodHead || assets[key] {
			continue
		}
		set[key] = true
	}
	return slices.Sorted(maps.Keys(set))
}

// TestOpenAPIRoutesMatchDocument: every route the server registers is in
// the document, and every operation of the document is a route, both with
// the dev issuer (every route) and with Better Auth (the dev-only ones are
// absent).
func TestOpenAPIRoutesMatchDocument(t *testing.T) {
	o := loadOAS(t)
	all, devOnly := o.operations()
	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"DevIssuer", map[string]string{"BETTER_AUTH_URL": ""}, all},
		{"BetterAuth", nil, slices.DeleteFunc(slices.Clone(all), func(k string) bool { return slices.Contains(devOnly, k) })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, "sqlite", tt.env)
			// Serving: a server stopped before its listener started would not stop.
			if status, _ := ts.do(t, "GET", "/health", "", nil); status != http.StatusOK {
				t.Fatalf("health: got %d", status)
			}
			got := servedRoutes(t, ts)
			for _, k := range got {
				if !slices.Contains(tt.want, k) {
					t.Errorf("route %s is served but not in openapi.json", k)
				}
			}
			for _, k := range tt.want {
				if !slices.Contains(got, k) {
					t.Errorf("openapi.json documents %s, which is not served", k)
				}
			}
		})
	}
}

// pathParam matches an OpenAPI path template parameter, {name}.
var pathParam = regexp.MustCompile(`\{([^}]+)\}`)

// TestOpenAPIDocument checks the document itself: every schema in it
// compiles as JSON Schema 2020-12 (its $refs resolve), every operation has
// a unique operationId, a listed tag, responses with descriptions, its path
// parameters declared and known security schemes; and /docs renders it.
func TestOpenAPIDocument(t *testing.T) {
	o := loadOAS(t)
	if o.doc["openapi"] != "3.1.0" || o.doc["jsonSchemaDialect"] != "https://json-schema.org/draft/2020-12/schema" {
		t.Fatalf("openapi %v, jsonSchemaDialect %v", o.doc["openapi"], o.doc["jsonSchemaDialect"])
	}
	comps := o.doc["components"].(map[string]any)
	for name := range comps["schemas"].(map[string]any) {
		o.schema(t, pointer("components", "schemas", name))
	}
	tags := map[string]bool{}
	for _, tag := range o.doc["tags"].([]any) {
		tags[tag.(map[string]any)["name"].(string)] = true
	}
	schemes := comps["securitySchemes"].(map[string]any)
	ids := map[string]string{}
	page, _, err := renderDocs(openAPIDoc)
	if err != nil {
		t.Fatalf("render /docs: %v", err)
	}
	all, _ := o.operations()
	for _, key := range all {
		method, path, _ := strings.Cut(key, " ")
		opPtr := pointer("paths", path, strings.ToLower(method))
		op := o.at(opPtr).(map[string]any)
		id, _ := op["operationId"].(string)
		if id == "" || ids[id] != "" {
			t.Errorf("%s: operationId %q missing or also used by %s", key, id, ids[id])
		}
		ids[id] = key
		if ts, _ := op["tags"].([]any); len(ts) == 0 || !tags[ts[0].(string)] {
			t.Errorf("%s: tags %v: the first must be listed in tags", key, op["tags"])
		}
		if sum, _ := op["summary"].(string); sum == "" {
			t.Errorf("%s: no summary", key)
		}
		declared := map[string]bool{}
		for i, p := range asSlice(op["parameters"]) {
			p, ptr := o.resolve(p.(map[string]any), opPtr+pointer("parameters", strconv.Itoa(i)))
			if p == nil {
				t.Errorf("%s: parameter %d: unresolved $ref", key, i)
				continue
			}
			if p["in"] == "path" {
				declared[p["name"].(string)] = p["required"] == true
			}
			o.schema(t, ptr+"/schema")
		}
		for _, m := range pathParam.FindAllStringSubmatch(path, -1) {
			if !declared[m[1]] {
				t.Errorf("%s: path parameter %s not declared as required", key, m[1])
			}
		}
		for _, sec := range asSlice(op["security"]) {
			for name := range sec.(map[string]any) {
				if schemes[name] == nil {
					t.Errorf("%s: unknown security scheme %s", key, name)
				}
			}
		}
		if rb, ok := op["requestBody"].(map[string]any); ok {
			for ct := range rb["content"].(map[string]any) {
				o.schema(t, opPtr+pointer("requestBody", "content", ct, "schema"))
			}
		}
		responses, _ := op["responses"].(map[string]any)
		if len(responses) == 0 {
			t.Errorf("%s: no responses", key)
		}
		for status, r := range responses {
			r, ptr := o.resolve(r.(map[string]any), opPtr+pointer("responses", status))
			if r == nil || r["description"] == nil {
				t.Errorf("%s %s: unresolved $ref or no description", key, status)
				continue
			}
			for ct := range asMap(r["content"]) {
				o.schema(t, ptr+pointer("content", ct, "schema"))
			}
		}
		anchor := strings.ToLower(method) + strings.NewReplacer("/", "-", "{", "", "}", "").Replace(path)
		if !bytes.Contains(page, []byte(`id="`+anchor+`"`)) {
			t.Errorf("%s: not on the /docs page (anchor %s)", key, anchor)
		}
	}
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// TestOpenAPIResponsesMatchSchemas sends real requests to a real server,
// every operation with its success and its usual errors, and validates each
// answer (status, content type, headers, body; each SSE frame) against the
// document.
func TestOpenAPIResponsesMatchSchemas(t *testing.T) {
	o := loadOAS(t)
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			ts := startServer(t, b, map[string]string{"BODY_LIMIT": "8192", "RATE_LIMIT_WRITES": "40"})
			checkAPI(t, o, ts)
		})
	}
	t.Run("DevIssuer", func(t *testing.T) {
		ts := startServer(t, "sqlite", map[string]string{"BETTER_AUTH_URL": ""})
		res, body := call(t, ts, "GET", "/api/auth/jwks", "", nil)
		o.check(t, "GET", "/api/auth/jwks", res, body)
		res, body = call(t, ts, "POST", "/api/dev/token", "", map[string]string{"email": "ada@example.com"})
		o.check(t, "POST", "/api/dev/token", res, body)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("dev token: got %d %s", res.StatusCode, body)
		}
		res, body = call(t, ts, "POST", "/api/dev/token", "", map[string]string{"email": "not an email"})
		o.check(t, "POST", "/api/dev/token", res, body)
		res, body = call(t, ts, "POST", "/api/dev/token", "", `{"email":"ada@example.com"}`, "Content-Type: text/plain")
		o.check(t, "POST", "/api/dev/token", res, body)
	})

	var missed []string
	for _, key := range documentedResponses(o) {
		if !o.seen[key] {
			missed = append(missed, key)
		}
	}
	t.Logf("documented responses not exercised here (%d): %s", len(missed), strings.Join(missed, "; "))
}

// documentedResponses returns "METHOD /path status" of every documented
// response.
func documentedResponses(o *oas) []string {
	var out []string
	all, _ := o.operations()
	for _, key := range all {
		method, path, _ := strings.Cut(key, " ")
		op := o.at(pointer("paths", path, strings.ToLower(method))).(map[string]any)
		for status := range op["responses"].(map[string]any) {
			out = append(out, key+" "+status)
		}
	}
	slices.Sort(out)
	return out
}

// checkAPI exercises every operation of ts and checks the answers against o.
func checkAPI(t *testing.T, o *oas, ts *testServer) {
	u, tok := ts.user(t)
	_, other := ts.user(t)
	// expect sends a request, checks its status and validates the answer.
	expect := func(want int, method, route, path, token string, body any, headers ...string) []byte {
		t.Helper()
		res, data := call(t, ts, method, path, token, body, headers...)
		if res.StatusCode != want {
			t.Fatalf("%s %s: got %d %.300s, want %d", method, path, res.StatusCode, data, want)
		}
		o.check(t, method, route, res, data)
		return data
	}

	// Operations.
	expect(200, "GET", "/health", "/health", "", nil)
	expect(200, "GET", "/ready", "/ready", "", nil)
	expect(200, "GET", "/metrics", "/metrics", "", nil)
	expect(200, "GET", "/openapi.json", "/openapi.json", "", nil)
	expect(200, "GET", "/docs", "/docs", "", nil)
	res, _ := call(t, ts, "GET", "/", "", nil)
	expect(200, "GET", "/", "/", "", nil)
	expect(304, "GET", "/", "/", "", nil, "If-None-Match: "+res.Header.Get("ETag"))

	// Todos.
	todo := decode[struct{ ID string }](t, expect(201, "POST", "/api/todos", "/api/todos", tok,
		map[string]any{"title": "Buy milk", "description": "oat"}))
	expect(201, "POST", "/api/todos", "/api/todos", tok, map[string]any{"title": "Call mom", "description": nil})
	expect(400, "POST", "/api/todos", "/api/todos", tok, `{"title":`)
	expect(422, "POST", "/api/todos", "/api/todos", tok, map[string]any{"title": strings.Repeat("x", 501)})
	expect(422, "POST", "/api/todos", "/api/todos", tok, map[string]any{"title": 5})
	expect(413, "POST", "/api/todos", "/api/todos", tok, map[string]any{"title": "big", "description": strings.Repeat("x", 9000)})
	expect(401, "POST", "/api/todos", "/api/todos", "", map[string]any{"title": "x"})
	expect(200, "GET", "/api/todos", "/api/todos?skip=0&limit=10&is_complete=false", tok, nil)
	expect(200, "GET", "/api/todos", "/api/todos", tok, nil)
	expect(422, "GET", "/api/todos", "/api/todos?limit=1001", tok, nil)
	expect(401, "GET", "/api/todos", "/api/todos", "", nil)
	expect(401, "GET", "/api/todos", "/api/todos", "not.a.token", nil)
	item := "/api/todos/" + todo.ID
	expect(200, "GET", "/api/todos/{id}", item, tok, nil)
	expect(404, "GET", "/api/todos/{id}", item, other, nil)
	expect(404, "GET", "/api/todos/{id}", "/api/todos/"+uuid.NewString(), tok, nil)
	expect(422, "GET", "/api/todos/{id}", "/api/todos/not-a-uuid", tok, nil)
	expect(200, "PUT", "/api/todos/{id}", item, tok, map[string]any{"title": "Buy oat milk", "description": nil})
	expect(422, "PUT", "/api/todos/{id}", item, tok, map[string]any{})
	expect(400, "PUT", "/api/todos/{id}", item, tok, `[1]`)
	expect(404, "PUT", "/api/todos/{id}", item, other, map[string]any{"title": "mine"})
	expect(200, "PATCH", "/api/todos/{id}", item, tok, map[string]any{"is_complete": true})
	expect(422, "PATCH", "/api/todos/{id}", item, tok, map[string]any{})
	expect(200, "GET", "/api/todos", "/api/todos?is_complete=true", tok, nil)

	// Chat (the built-in agent) and its history.
	expect(200, "POST", "/api/chat", "/api/chat", tok, map[string]any{"message": "add call the plumber"})
	expect(200, "POST", "/api/chat", "/api/chat", tok, map[string]any{"message": "list", "conversation_id": 7})
	expect(200, "POST", "/api/chat", "/api/chat", tok, map[string]any{"message": "done with plumber"}, "Accept: text/event-stream")
	expect(422, "POST", "/api/chat", "/api/chat", tok, map[string]any{"message": "   "})
	expect(400, "POST", "/api/chat", "/api/chat", tok, `nope`)
	expect(200, "GET", "/api/chat/{user_id}", "/api/chat/"+u.ID+"?limit=2", tok, nil)
	expect(422, "GET", "/api/chat/{user_id}", "/api/chat/"+u.ID+"?before=yesterday", tok, nil)
	expect(404, "GET", "/api/chat/{user_id}", "/api/chat/someone-else", tok, nil)
	expect(404, "POST", "/api/chat/{id}/cancel", "/api/chat/no-such-chat/cancel", tok, nil)
	expect(422, "POST", "/api/chat/{id}/cancel", "/api/chat/"+strings.Repeat("x", 129)+"/cancel", tok, nil)
	expect(401, "POST", "/api/chat/{id}/cancel", "/api/chat/c1/cancel", "", nil)

	// MCP.
	mcpHeaders := []string{"Accept: application/json, text/event-stream", "Mcp-Protocol-Version: 2025-06-18"}
	expect(200, "POST", "/mcp", "/mcp", tok, map[string]any{"jsonrpc": "2.0", "id": 1, "method": "tools/call",
		"params": map[string]any{"name": "list_tasks", "arguments": map[string]any{}}}, mcpHeaders...)
	expect(200, "POST", "/mcp", "/mcp", tok, map[string]any{"jsonrpc": "2.0", "id": 2, "method": "tools/call",
		"params": map[string]any{"name": "delete_task", "arguments": map[string]any{"task_id": uuid.NewString()}}}, mcpHeaders...)
	expect(202, "POST", "/mcp", "/mcp", tok, map[string]any{"jsonrpc": "2.0", "method": "notifications/initialized"}, mcpHeaders...)
	expect(401, "POST", "/mcp", "/mcp", "", map[string]any{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, mcpHeaders...)
	expect(405, "GET", "/mcp", "/mcp", tok, nil, "Accept: text/event-stream")
	expect(200, "DELETE", "/mcp", "/mcp", tok, nil)

	// The WebSocket upgrade: 101, and its refusals.
	wsURL := "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws"
	for _, tt := range []struct {
		token, origin string
		want          int
	}{{tok, "", 101}, {"", "", 401}, {tok, "http://evil.example", 403}} {
		h := http.Header{}
		if tt.token != "" {
			h.Set("Authorization", "Bearer "+tt.token)
		}
		if tt.origin != "" {
			h.Set("Origin", tt.origin)
		}
		conn, res, err := websocket.DefaultDialer.Dial(wsURL, h)
		if conn != nil {
			conn.Close()
		}
		if res == nil {
			t.Fatalf("ws dial: %v", err)
		}
		data, _ := io.ReadAll(res.Body)
		if res.StatusCode != tt.want {
			t.Fatalf("ws dial: got %d %s, want %d", res.StatusCode, data, tt.want)
		}
		o.check(t, "GET", "/ws", res, data)
	}
	expect(426, "GET", "/ws", "/ws", tok, nil)

	// Not in dev mode: the dev sign-in is off.
	expect(404, "POST", "/api/dev/token", "/api/dev/token", "", map[string]string{"email": "ada@example.com"})

	// Delete, then the write limit runs out (RATE_LIMIT_WRITES=40).
	expect(204, "DELETE", "/api/todos/{id}", item, tok, nil)
	expect(404, "DELETE", "/api/todos/{id}", item, tok, nil)
	for i := 0; ; i++ {
		res, data := call(t, ts, "POST", "/api/todos", tok, map[string]any{"title": fmt.Sprint("todo ", i)})
		if res.StatusCode == http.StatusTooManyRequests {
			o.check(t, "POST", "/api/todos", res, data)
			break
		}
		if res.StatusCode != http.StatusCreated || i > 40 {
			t.Fatalf("write %d: got %d %s, want 201 until the limit, then 429", i, res.StatusCode, data)
		}
	}
	expect(429, "PATCH", "/api/todos/{id}", item, tok, map[string]any{"is_complete": false})
	expect(429, "DELETE", "/api/todos/{id}", item, tok, nil)
}
