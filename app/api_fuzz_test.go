package app

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/evotodo/evo/store"
)

// Fuzz targets for the REST surface: request bodies and query strings, the
// parsers of outside input in package app. They run the real Fiber app in
// memory (app.Test) on SQLite (EVO_FUZZ_BACKEND=postgres for PostgreSQL)
// with a real JWKS. What must hold for any input: no panic, no 5xx, and every
// 4xx is the documented JSON error {detail, code, field?} whose code matches
// its status.

// fuzzServer is one replica and a user with a todo, shared by the
// iterations of a fuzz target (iterations run one at a time per process).
type fuzzServer struct {
	ts     *testServer
	user   store.User
	token  string
	todoID string
}

func newFuzzServer(f *testing.F) *fuzzServer {
	backend := "sqlite"
	if b := os.Getenv("EVO_FUZZ_BACKEND"); b != "" {
		backend = b
	}
	ts := startServer(f, backend, map[string]string{"RATE_LIMIT_WRITES": "100000000", "CHAT_RATE_LIMIT": "100000000"})
	u, tok := ts.user(f)
	status, body := ts.do(f, "POST", "/api/todos", tok, map[string]string{"title": "buy milk"})
	if status != http.StatusCreated {
		f.Fatalf("create: %d %s", status, body)
	}
	return &fuzzServer{ts: ts, user: u, token: tok, todoID: decode[store.Todo](f, body).ID}
}

// request sends a request through the app in memory: path and rawQuery go
// on the wire as they are (bytes a request line cannot carry are
// percent-encoded first).
func (fs *fuzzServer) request(t *testing.T, method, path, rawQuery string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://evo.test/", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Path, req.URL.RawPath, req.URL.RawQuery = "", "", ""
	req.URL.Opaque = wireSafe(path)
	if rawQuery != "" {
		req.URL.Opaque += "?" + wireSafe(rawQuery)
	}
	req.Header.Set("Authorization", "Bearer "+fs.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := fs.ts.srv.app.Test(req, -1)
	if err != nil {
		t.Fatalf("%s %s: %v", method, req.URL.Opaque, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, data
}

// wireSafe percent-encodes what cannot stand in a request line.
func wireSafe(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '#' {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// errorCodes maps an error status to the code its body must carry.
var errorCodes = map[int]string{
	400: store.CodeBadRequest, 401: store.CodeUnauthorized, 403: store.CodeForbidden, 404: store.CodeNotFound,
	405: "method_not_allowed", 409: store.CodeConflict, 413: "request_entity_too_large", 422: store.CodeInvalid, 429: store.CodeRateLimited,
}

// checkAnswer fails on a 5xx, and on a 4xx that is not the JSON error body.
func checkAnswer(t *testing.T, what string, status int, header http.Header, data []byte) {
	t.Helper()
	if status >= 500 {
		t.Fatalf("%s: got %d %s", what, status, data)
	}
	if status < 400 {
		return
	}
	if ct := header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("%s: %d with Content-Type %q", what, status, ct)
	}
	var body map[string]any
	if err := json.Unmarshal(data, &body); err != nil {
		t.Fatalf("%s: %d body %q is not a JSON object: %v", what, status, data, err)
	}
	detail, _ := body["detail"].(string)
	code, _ := body["code"].(string)
	if detail == "" || code == "" || !utf8.ValidString(detail) {
		t.Fatalf("%s: %d body %s lacks detail or code", what, status, data)
	}
	if want, ok := errorCodes[status]; !ok || code != want {
		t.Fatalf("%s: status %d with code %q (want %q)", what, status, code, want)
	}
	for k := range body {
		if k != "detail" && k != "code" && k != "field" {
			t.Fatalf("%s: body %s has key %q", what, data, k)
		}
	}
	if f, has := body["field"]; has && (status != 422 || f == "") {
		t.Fatalf("%s: %d body %s names a field", what, status, data)
	}
}

// FuzzDecodeJSON: decodeJSON into every REST body type, and the chat
// input's validation. An accepted body is a JSON object; a refused one is
// bad_request (unreadable) or invalid naming one of the type's fields.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{
		`{"title":"buy milk"}`, `{"title":"a","description":null,"is_complete":true}`, `{"title":5}`,
		`{"is_complete":"yes"}`, `{"message":"add milk","conversation_id":7,"id":"c1"}`, `{"message":"hi","conversation_id":{}}`,
		`null`, `[]`, `"x"`, `1`, ``, ` `, `{`, `{"title":"a"} {"title":"b"}`, `{"title":"\ud800"}`, `{"TITLE":"a"}`,
		`{"title":"a","title":null}`, "{\"title\":\"\xff\"}", `{"message":"\u0000"}`, `{"id":"` + strings.Repeat("x", 129) + `"}`,
	} {
		f.Add([]byte(s))
	}
	targets := []struct {
		name   string
		new    func() any
		fields []string
	}{
		{"todo", func() any { return &todoBody{} }, []string{"title", "description", "is_complete"}},
		{"toggle", func() any {
			return &struct {
				IsComplete *bool `json:"is_complete"`
			}{}
		}, []string{"is_complete"}},
		{"chat", func() any { return &chatInput{} }, []string{"message", "id", "conversation_id"}},
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, tg := range targets {
			v := tg.new()
			err := decodeJSON(body, v)
			if err == nil {
				if trimmed := bytes.TrimSpace(body); !json.Valid(body) || len(trimmed) == 0 || trimmed[0] != '{' {
					t.Fatalf("%s: accepted %q, not a JSON object", tg.name, body)
				}
				if in, ok := v.(*chatInput); ok {
					err = in.validate()
					if err == nil && (in.Message == nil || strings.TrimSpace(*in.Message) == "" || !utf8.ValidString(*in.Message)) {
						t.Fatalf("chat: accepted message %q", deref(in.Message))
					}
				}
			}
			if err == nil {
				continue
			}
			switch code, field := store.ErrorCode(err), store.ErrorField(err); {
			case code == store.CodeBadRequest && field == "":
			case code == store.CodeInvalid && slices.Contains(tg.fields, field):
			default:
				t.Fatalf("%s: %q: code %q field %q (%v)", tg.name, body, code, field, err)
			}
		}
	})
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

// FuzzRESTBody sends arbitrary bodies to every route that reads one:
// POST /api/todos, PUT and PATCH /api/todos/{id} (a todo of the user), POST
// /api/chat (the builtin agent, so any command runs). A 2xx is the resource
// the route documents.
func FuzzRESTBody(f *testing.F) {
	for _, s := range []string{
		`{"title":"buy milk"}`, `{"title":"buy milk","description":"2 litres"}`, `{"title":""}`, `{"title":null}`,
		`{"is_complete":true}`, `{"is_complete":null}`, `{"title":"x","is_complete":1}`, `{}`, `null`, `[]`, `{`,
		`{"message":"add buy bread: 2"}`, `{"message":"delete milk"}`, `{"message":"list","conversation_id":"c"}`,
		`{"message":"rename milk to oat milk"}`, `{"title":"` + strings.Repeat("a", 501) + `"}`, `{"description":"\u0000"}`,
	} {
		for m := range uint8(4) {
			f.Add(m, []byte(s))
		}
	}
	fs := newFuzzServer(f)
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		var method, path string
		switch route % 4 {
		case 0:
			method, path = "POST", "/api/todos"
		case 1:
			method, path = "PUT", "/api/todos/"+fs.todoID
		case 2:
			method, path = "PATCH", "/api/todos/"+fs.todoID
		case 3:
			method, path = "POST", "/api/chat"
		}
		status, header, data := fs.request(t, method, path, "", body)
		what := fmt.Sprintf("%s %s %q", method, path, body)
		checkAnswer(t, what, status, header, data)
		if status >= 300 {
			if status == http.StatusNotFound && route%4 != 0 && route%4 != 3 {
				// The todo may have been deleted by a chat ("delete milk"): make another.
				status, body := fs.ts.do(t, "POST", "/api/todos", fs.token, map[string]string{"title": "buy milk"})
				if status != http.StatusCreated {
					t.Fatalf("create: %d %s", status, body)
				}
				fs.todoID = decode[store.Todo](t, body).ID
			}
			return
		}
		var got struct {
			ID     string `json:"id"`
			UserID string `json:"user_id"`
		}
		if err := json.Unmarshal(data, &got); err != nil || got.ID == "" || got.UserID != fs.user.ID {
			t.Fatalf("%s: got %d %s", what, status, data)
		}
	})
}

// FuzzRESTQuery sends arbitrary query strings to the routes that read one
// (GET /api/todos, GET /api/chat/{user_id}) and arbitrary ids to GET
// /api/todos/{id} and /api/chat/{user_id}: 200, 4xx JSON errors, nothing else.
func FuzzRESTQuery(f *testing.F) {
	for _, s := range [][2]string{
		{"", "skip=0&limit=100&is_complete=true"}, {"x", "limit=0"}, {"x", "limit=1001"}, {"x", "skip=-1"},
		{"x", "skip=99999999999999999999"}, {"x", "limit=1e3"}, {"x", "is_complete=maybe"}, {"x", "is_complete=T"},
		{"x", "limit=%zz"}, {"x", "skip=9223372036854775807"}, {"x", "limit=+5&skip=0x10"}, {"x", "before=2026-01-01T00:00:00Z"},
		{"x", "before=yesterday&limit=101"}, {"00000000-0000-0000-0000-000000000000", "a=b&a=c"},
		{"938A7A06-FE90-401C-84B6-6438912D8CA6", ""}, {"{938a7a06-fe90-401c-84b6-6438912d8ca6}", ""},
		{"urn:uuid:938a7a06-fe90-401c-84b6-6438912d8ca6", ""}, {"%00", "limit=%00"}, {"..", "skip=%20"},
	} {
		f.Add(s[0], s[1])
	}
	fs := newFuzzServer(f)
	f.Fuzz(func(t *testing.T, id, query string) {
		seg := url.PathEscape(id)
		for _, p := range []string{"/api/todos", "/api/chat/" + fs.user.ID, "/api/todos/" + seg, "/api/chat/" + seg} {
			status, header, data := fs.request(t, "GET", p, query, nil)
			what := fmt.Sprintf("GET %s?%s", p, query)
			checkAnswer(t, what, status, header, data)
			if status == http.StatusOK && !json.Valid(data) {
				t.Fatalf("%s: 200 with %q", what, data)
			}
		}
	})
}
