package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/evotodo/evo/store"
)

// send is ts.do that also sets headers and returns the response headers.
// A nil body sends none.
func send(t testing.TB, ts *testServer, method, path string, header map[string]string, body any) (int, http.Header, []byte) {
	t.Helper()
	res, data := roundTrip(t, ts, method, path, "", body, header)
	return res.StatusCode, res.Header, data
}

// bearerHeader is the Authorization header of token.
func bearerHeader(token string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + token}
}

// postTodo creates a todo through the API and fails unless it is created.
func postTodo(t testing.TB, ts *testServer, token string, body any) store.Todo {
	t.Helper()
	status, data := ts.do(t, "POST", "/api/todos", token, body)
	if status != http.StatusCreated {
		t.Fatalf("POST /api/todos %v: got %d %s, want 201", body, status, data)
	}
	return decode[store.Todo](t, data)
}

// getList lists todos through the API and fails unless it answers 200.
func getList(t testing.TB, ts *testServer, token, query string) (TodoList, []byte) {
	t.Helper()
	status, data := ts.do(t, "GET", "/api/todos"+query, token, nil)
	if status != http.StatusOK {
		t.Fatalf("GET /api/todos%s: got %d %s, want 200", query, status, data)
	}
	return decode[TodoList](t, data), data
}

// todoIDs returns the ids of todos in order.
func todoIDs(todos []store.Todo) []string {
	out := make([]string, len(todos))
	for i, td := range todos {
		out[i] = td.ID
	}
	return out
}

// checkError fails unless the response is the JSON error body
// {detail, code, field?} with status, code and field (absent if "").
func checkError(t testing.TB, status int, header http.Header, data []byte, wantStatus int, wantCode, wantField string) {
	t.Helper()
	if status != wantStatus {
		t.Errorf("status: got %d %s, want %d %s", status, data, wantStatus, wantCode)
		return
	}
	if ct := header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type: got %q, want application/json", ct)
	}
	var body map[string]any
	if err := json.Unmarshal(data, &body); err != nil {
		t.Fatalf("body: got %s, want a JSON object: %v", data, err)
	}
	for k := range body {
		if k != "detail" && k != "code" && k != "field" {
			t.Errorf("body %s: unexpected key %q", data, k)
		}
	}
	if d, ok := body["detail"].(string); !ok || d == "" {
		t.Errorf("detail: got %#v, want a message", body["detail"])
	}
	if got := body["code"]; got != wantCode {
		t.Errorf("code: got %#v, want %q", got, wantCode)
	}
	got, has := body["field"]
	switch {
	case wantField == "" && has:
		t.Errorf("field: got %#v, want none", got)
	case wantField != "" && got != wantField:
		t.Errorf("field: got %#v, want %q", got, wantField)
	}
}

// snapshot is what a user can see of their todos: the list body and the
// last seq of their event log.
func snapshot(t testing.TB, ts *testServer, userID, token string) string {
	t.Helper()
	_, data := getList(t, ts, token, "?limit=1000")
	seq, err := ts.srv.db.LastSeq(context.Background(), userID)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("seq %d %s", seq, data)
}

func TestTodoCreateReturnsTheTodo(t *testing.T) {
	tests := []struct {
		name            string
		body            string
		wantTitle       string
		wantDescription any // nil: JSON null
	}{
		{"TitleAndDescription", `{"title":"Buy groceries","description":"Milk, eggs, bread"}`, "Buy groceries", "Milk, eggs, bread"},
		{"TitleOnlyHasNullDescription", `{"title":"Call mom"}`, "Call mom", nil},
		{"NullDescription", `{"title":"Call mom","description":null}`, "Call mom", nil},
		{"EmptyDescriptionKept", `{"title":"Read","description":""}`, "Read", ""},
		{"UnknownFieldsIgnored", `{"title":"Walk","priority":3,"user_id":"someone-else","id":"550e8400-e29b-41d4-a716-446655440000"}`, "Walk", nil},
		{"IsCompleteIgnored", `{"title":"Done already?","is_complete":true}`, "Done already?", nil},
		{"UnicodeKeptExactly", `{"title":"日本語 ✓ café 😀","description":"naïve\nline two"}`, "日本語 ✓ café 😀", "naïve\nline two"},
		{"SurroundingSpacesKept", `{"title":"  padded  "}`, "  padded  ", nil},
	}
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, b, nil)
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					u, token := ts.user(t)
					start := time.Now()
					status, header, data := send(t, ts, "POST", "/api/todos", bearerHeader(token), tt.body)
					end := time.Now()
					if status != http.StatusCreated {
						t.Fatalf("got %d %s, want 201", status, data)
					}
					if ct := header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
						t.Errorf("Content-Type: got %q, want application/json", ct)
					}
					got := decode[map[string]any](t, data)
					var keys []string
					for k := range got {
						keys = append(keys, k)
					}
					slices.Sort(keys)
					if want := []string{"created_at", "description", "id", "is_complete", "title", "updated_at", "user_id"}; !slices.Equal(keys, want) {
						t.Errorf("keys: got %v, want %v", keys, want)
					}
					id, _ := got["id"].(string)
					if parsed, err := uuid.Parse(id); err != nil || parsed.Version() != 4 || parsed.String() != id {
						t.Errorf("id: got %q, want a lower-case UUID v4", id)
					}
					checks := []struct {
						name      string
						got, want any
					}{
						{"user_id", got["user_id"], u.ID},
						{"title", got["title"], tt.wantTitle},
						{"description", got["description"], tt.wantDescription},
						{"is_complete", got["is_complete"], false},
						{"updated_at", got["updated_at"], got["created_at"]},
					}
					for _, c := range checks {
						if c.got != c.want {
							t.Errorf("%s: got %#v, want %#v", c.name, c.got, c.want)
						}
					}
					created, _ := got["created_at"].(string)
					at, err := time.Parse(time.RFC3339Nano, created)
					switch {
					case err != nil || !strings.HasSuffix(created, "Z"):
						t.Errorf("created_at: got %q, want RFC 3339 in UTC (…Z)", created)
					case at.Before(start.Add(-time.Second)) || at.After(end.Add(time.Second)):
						t.Errorf("created_at: got %v, want between %v and %v", at, start, end)
					}

					status, again := ts.do(t, "GET", "/api/todos/"+id, token, nil)
					if status != http.StatusOK || !bytes.Equal(again, data) {
						t.Errorf("GET after create: got %d %s, want 200 %s", status, again, data)
					}
					list, _ := getList(t, ts, token, "")
					if list.Total != 1 || !slices.Equal(todoIDs(list.Todos), []string{id}) {
						t.Errorf("list after create: got %d %v, want 1 [%s]", list.Total, todoIDs(list.Todos), id)
					}
				})
			}
		})
	}
}

func TestTodoList(t *testing.T) {
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, b, nil)

			t.Run("EmptyListIsEmptyArray", func(t *testing.T) {
				_, token := ts.user(t)
				for _, query := range []string{"", "?is_complete=true", "?skip=10"} {
					status, data := ts.do(t, "GET", "/api/todos"+query, token, nil)
					if got, want := string(data), `{"todos":[],"total":0}`; status != http.StatusOK || got != want {
						t.Errorf("GET /api/todos%s: got %d %s, want 200 %s", query, status, got, want)
					}
				}
			})

			t.Run("PagesAndFiltersNewestFirst", func(t *testing.T) {
				_, token := ts.user(t)
				// t[4] is the newest; t[1] and t[3] are complete.
				var td []store.Todo
				for i := range 5 {
					td = append(td, postTodo(t, ts, token, map[string]string{"title": fmt.Sprintf("todo %d", i)}))
				}
				for _, i := range []int{1, 3} {
					if status, data := ts.do(t, "PATCH", "/api/todos/"+td[i].ID, token, `{"is_complete":true}`); status != http.StatusOK {
						t.Fatalf("PATCH: got %d %s", status, data)
					}
				}
				tests := []struct {
					name      string
					query     string
					want      []store.Todo
					wantTotal int
				}{
					{"Defaults", "", []store.Todo{td[4], td[3], td[2], td[1], td[0]}, 5},
					{"SkipAndLimit", "?skip=1&limit=2", []store.Todo{td[3], td[2]}, 5},
					{"LimitOne", "?limit=1", []store.Todo{td[4]}, 5},
					{"LimitMax", "?limit=1000", []store.Todo{td[4], td[3], td[2], td[1], td[0]}, 5},
					{"SkipZero", "?skip=0", []store.Todo{td[4], td[3], td[2], td[1], td[0]}, 5},
					{"SkipLast", "?skip=4", []store.Todo{td[0]}, 5},
					{"SkipPastEnd", "?skip=5", nil, 5},
					{"Complete", "?is_complete=true", []store.Todo{td[3], td[1]}, 2},
					{"Open", "?is_complete=false", []store.Todo{td[4], td[2], td[0]}, 3},
					{"OpenSecondPage", "?is_complete=false&skip=1&limit=1", []store.Todo{td[2]}, 3},
					{"EmptyParamsAreDefaults", "?skip=&limit=&is_complete=", []store.Todo{td[4], td[3], td[2], td[1], td[0]}, 5},
				}
				for _, tt := range tests {
					t.Run(tt.name, func(t *testing.T) {
						got, _ := getList(t, ts, token, tt.query)
						if got.Total != tt.wantTotal || !slices.Equal(todoIDs(got.Todos), todoIDs(tt.want)) {
							t.Errorf("got %d %v, want %d %v", got.Total, todoIDs(got.Todos), tt.wantTotal, todoIDs(tt.want))
						}
					})
				}
			})

			t.Run("DefaultLimitIs100", func(t *testing.T) {
				u, token := ts.user(t)
				for i := range store.DefaultListLimit + 1 {
					if _, err := ts.srv.todos.Create(context.Background(), u.ID, store.TodoCreate{Title: fmt.Sprintf("bulk %d", i)}); err != nil {
						t.Fatal(err)
					}
				}
				tests := []struct {
					name      string
					query     string
					wantLen   int
					wantTotal int
				}{
					{"NoLimit", "", 100, 101},
					{"Limit1000", "?limit=1000", 101, 101},
					{"SkipPastDefault", "?skip=100", 1, 101},
				}
				for _, tt := range tests {
					got, _ := getList(t, ts, token, tt.query)
					if len(got.Todos) != tt.wantLen || got.Total != tt.wantTotal {
						t.Errorf("%s: got %d todos, total %d; want %d, %d", tt.name, len(got.Todos), got.Total, tt.wantLen, tt.wantTotal)
					}
				}
				first, _ := getList(t, ts, token, "?limit=1")
				if len(first.Todos) != 1 || first.Todos[0].Title != "bulk 100" {
					t.Errorf("newest: got %+v, want bulk 100", first.Todos)
				}
			})
		})
	}
}

func TestTodoGet(t *testing.T) {
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, b, nil)
			_, token := ts.user(t)
			td := postTodo(t, ts, token, map[string]string{"title": "Find me", "description": "here"})
			want, err := json.Marshal(td)
			if err != nil {
				t.Fatal(err)
			}
			tests := []struct {
				name       string
				id         string
				wantStatus int
				wantBody   string
			}{
				{"Existing", td.ID, http.StatusOK, string(want)},
				{"UpperCaseID", strings.ToUpper(td.ID), http.StatusOK, string(want)},
				{"Missing", uuid.NewString(), http.StatusNotFound, `{"detail":"todo not found","code":"not_found"}`},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					status, data := ts.do(t, "GET", "/api/todos/"+tt.id, token, nil)
					if status != tt.wantStatus || string(data) != tt.wantBody {
						t.Errorf("got %d %s, want %d %s", status, data, tt.wantStatus, tt.wantBody)
					}
				})
			}
		})
	}
}

func TestTodoUpdateChangesOnlyGivenFields(t *testing.T) {
	tests := []struct {
		name string
		body string
		want store.Todo // Title, Description, IsComplete
	}{
		{"TitleOnlyKeepsDescription", `{"title":"New title"}`, store.Todo{Title: "New title", Description: ptr("Old description")}},
		{"NullTitleKeepsTitle", `{"title":null,"description":"New description"}`, store.Todo{Title: "Old title", Description: ptr("New description")}},
		{"NullDescriptionKeepsDescription", `{"title":"New title","description":null}`, store.Todo{Title: "New title", Description: ptr("Old description")}},
		{"EmptyDescriptionClearsIt", `{"description":""}`, store.Todo{Title: "Old title", Description: ptr("")}},
		{"IsCompleteOnly", `{"is_complete":true}`, store.Todo{Title: "Old title", Description: ptr("Old description"), IsComplete: true}},
		{"AllFields", `{"title":"T","description":"D","is_complete":true}`, store.Todo{Title: "T", Description: ptr("D"), IsComplete: true}},
		{"UnknownFieldsIgnored", `{"title":"T","user_id":"someone-else","created_at":"2000-01-01T00:00:00Z"}`, store.Todo{Title: "T", Description: ptr("Old description")}},
	}
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, b, nil)
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					u, token := ts.user(t)
					old := postTodo(t, ts, token, map[string]string{"title": "Old title", "description": "Old description"})
					status, data := ts.do(t, "PUT", "/api/todos/"+old.ID, token, tt.body)
					if status != http.StatusOK {
						t.Fatalf("got %d %s, want 200", status, data)
					}
					got := decode[store.Todo](t, data)
					want := tt.want
					want.ID, want.UserID, want.CreatedAt, want.UpdatedAt = old.ID, u.ID, old.CreatedAt, got.UpdatedAt
					if !reflect.DeepEqual(got, want) {
						t.Errorf("got %s, want %s", data, jsonString(want))
					}
					if !got.UpdatedAt.After(old.UpdatedAt) {
						t.Errorf("updated_at: got %v, want after %v", got.UpdatedAt, old.UpdatedAt)
					}
					if _, again := ts.do(t, "GET", "/api/todos/"+old.ID, token, nil); !bytes.Equal(again, data) {
						t.Errorf("GET after PUT: got %s, want %s", again, data)
					}
				})
			}
		})
	}
}

func TestTodoToggleSetsCompletion(t *testing.T) {
	tests := []struct {
		name  string
		steps []string // PATCH bodies in order
		want  bool
	}{
		{"Complete", []string{`{"is_complete":true}`}, true},
		{"Reopen", []string{`{"is_complete":true}`, `{"is_complete":false}`}, false},
		{"CompleteTwiceStaysComplete", []string{`{"is_complete":true}`, `{"is_complete":true}`}, true},
		{"OpenStaysOpen", []string{`{"is_complete":false}`}, false},
		{"OtherFieldsIgnored", []string{`{"is_complete":true,"title":"hijacked","description":"hijacked"}`}, true},
	}
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, b, nil)
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					_, token := ts.user(t)
					old := postTodo(t, ts, token, map[string]string{"title": "Toggle me", "description": "as is"})
					var got store.Todo
					for _, body := range tt.steps {
						status, data := ts.do(t, "PATCH", "/api/todos/"+old.ID, token, body)
						if status != http.StatusOK {
							t.Fatalf("PATCH %s: got %d %s, want 200", body, status, data)
						}
						got = decode[store.Todo](t, data)
					}
					want := old
					want.IsComplete, want.UpdatedAt = tt.want, got.UpdatedAt
					if !reflect.DeepEqual(got, want) {
						t.Errorf("got %s, want %s", jsonString(got), jsonString(want))
					}
					if !got.UpdatedAt.After(old.UpdatedAt) {
						t.Errorf("updated_at: got %v, want after %v", got.UpdatedAt, old.UpdatedAt)
					}
				})
			}
		})
	}
}

func TestTodoDeleteAnswers204ThenNotFound(t *testing.T) {
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, b, nil)
			_, token := ts.user(t)
			keep := postTodo(t, ts, token, map[string]string{"title": "Keep"})
			gone := postTodo(t, ts, token, map[string]string{"title": "Delete me"})

			status, header, data := send(t, ts, "DELETE", "/api/todos/"+gone.ID, bearerHeader(token), nil)
			if status != http.StatusNoContent || len(data) != 0 {
				t.Errorf("DELETE: got %d %q, want 204 and no body", status, data)
			}
			if cl := header.Get("Content-Length"); cl != "" && cl != "0" {
				t.Errorf("DELETE: Content-Length %s, want none or 0", cl)
			}
			notFound := `{"detail":"todo not found","code":"not_found"}`
			after := []struct {
				method string
				body   any
			}{
				{"GET", nil},
				{"DELETE", nil},
				{"PUT", `{"title":"resurrect"}`},
				{"PATCH", `{"is_complete":true}`},
			}
			for _, a := range after {
				status, data := ts.do(t, a.method, "/api/todos/"+gone.ID, token, a.body)
				if status != http.StatusNotFound || string(data) != notFound {
					t.Errorf("%s after DELETE: got %d %s, want 404 %s", a.method, status, data, notFound)
				}
			}
			list, _ := getList(t, ts, token, "")
			if list.Total != 1 || !slices.Equal(todoIDs(list.Todos), []string{keep.ID}) {
				t.Errorf("list after DELETE: got %d %v, want 1 [%s]", list.Total, todoIDs(list.Todos), keep.ID)
			}
		})
	}
}

// Boundary inputs the seed accepts: each round-trips exactly.
func TestTodoValidationAcceptsBoundaries(t *testing.T) {
	tests := []struct {
		name        string
		title       string
		description *string
	}{
		{"Title500ASCII", strings.Repeat("a", 500), nil},
		{"Title500TwoByteRunes", strings.Repeat("é", 500), nil},
		{"Title500ThreeByteRunes", strings.Repeat("日", 500), nil},
		{"Title500FourByteRunes", strings.Repeat("😀", 500), nil},
		{"Title1", "x", nil},
		{"Description2000ASCII", "t", ptr(strings.Repeat("d", 2000))},
		{"Description2000FourByteRunes", "t", ptr(strings.Repeat("😀", 2000))},
		{"DescriptionWhitespaceOnly", "t", ptr("   ")},
	}
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, b, nil)
			_, token := ts.user(t)
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					created := postTodo(t, ts, token, map[string]any{"title": tt.title, "description": tt.description})
					status, data := ts.do(t, "GET", "/api/todos/"+created.ID, token, nil)
					if status != http.StatusOK {
						t.Fatalf("GET: got %d %s", status, data)
					}
					got := decode[store.Todo](t, data)
					if got.Title != tt.title || !reflect.DeepEqual(got.Description, tt.description) {
						t.Errorf("got title %d runes, description %v; want the input back", len([]rune(got.Title)), got.Description)
					}
					// The same value is accepted by PUT.
					status, data = ts.do(t, "PUT", "/api/todos/"+created.ID, token, map[string]any{"title": tt.title, "description": tt.description})
					if status != http.StatusOK {
						t.Errorf("PUT the same values: got %d %s, want 200", status, data)
					}
				})
			}
		})
	}
}

// Rejected requests: every one answers the JSON error body naming the
// field and changes nothing.
func TestTodoValidationRejects(t *testing.T) {
	const idPath = "/api/todos/{id}"
	tests := []struct {
		name       string
		method     string
		path       string
		body       any // string: sent as is; nil: no body
		wantStatus int
		wantCode   string
		wantField  string
	}{
		// POST /api/todos
		{"CreateTitleMissing", "POST", "/api/todos", `{"description":"x"}`, 422, "invalid", "title"},
		{"CreateTitleNull", "POST", "/api/todos", `{"title":null}`, 422, "invalid", "title"},
		{"CreateTitleEmpty", "POST", "/api/todos", `{"title":""}`, 422, "invalid", "title"},
		{"CreateTitleWhitespaceOnly", "POST", "/api/todos", `{"title":" \t\n "}`, 422, "invalid", "title"},
		{"CreateTitleUnicodeSpacesOnly", "POST", "/api/todos", `{"title":"\u00a0\u2003\u3000"}`, 422, "invalid", "title"},
		{"CreateTitle501ASCII", "POST", "/api/todos", map[string]string{"title": strings.Repeat("a", 501)}, 422, "invalid", "title"},
		{"CreateTitle501TwoByteRunes", "POST", "/api/todos", map[string]string{"title": strings.Repeat("é", 501)}, 422, "invalid", "title"},
		{"CreateTitle501FourByteRunes", "POST", "/api/todos", map[string]string{"title": strings.Repeat("😀", 501)}, 422, "invalid", "title"},
		{"CreateTitleWithNUL", "POST", "/api/todos", `{"title":"a\u0000b"}`, 422, "invalid", "title"},
		{"CreateDescription2001", "POST", "/api/todos", map[string]string{"title": "t", "description": strings.Repeat("d", 2001)}, 422, "invalid", "description"},
		{"CreateDescription2001TwoByteRunes", "POST", "/api/todos", map[string]string{"title": "t", "description": strings.Repeat("ü", 2001)}, 422, "invalid", "description"},
		{"CreateDescriptionWithNUL", "POST", "/api/todos", `{"title":"t","description":"a\u0000b"}`, 422, "invalid", "description"},
		{"CreateTitleNumber", "POST", "/api/todos", `{"title":5}`, 422, "invalid", "title"},
		{"CreateTitleObject", "POST", "/api/todos", `{"title":{"text":"x"}}`, 422, "invalid", "title"},
		{"CreateTitleArray", "POST", "/api/todos", `{"title":["x"]}`, 422, "invalid", "title"},
		{"CreateDescriptionBoolean", "POST", "/api/todos", `{"title":"t","description":true}`, 422, "invalid", "description"},
		{"CreateMalformedJSON", "POST", "/api/todos", `{"title":`, 400, "bad_request", ""},
		{"CreateTrailingGarbage", "POST", "/api/todos", `{"title":"t"} {"title":"u"}`, 400, "bad_request", ""},
		{"CreateEmptyBody", "POST", "/api/todos", "", 400, "bad_request", ""},
		{"CreateNoBody", "POST", "/api/todos", nil, 400, "bad_request", ""},
		{"CreateWhitespaceBody", "POST", "/api/todos", " \n ", 400, "bad_request", ""},
		{"CreateArrayBody", "POST", "/api/todos", `[{"title":"t"}]`, 400, "bad_request", ""},
		{"CreateStringBody", "POST", "/api/todos", `"t"`, 400, "bad_request", ""},

		// GET /api/todos
		{"ListLimit1001", "GET", "/api/todos?limit=1001", nil, 422, "invalid", "limit"},
		{"ListLimitZero", "GET", "/api/todos?limit=0", nil, 422, "invalid", "limit"},
		{"ListLimitNegative", "GET", "/api/todos?limit=-1", nil, 422, "invalid", "limit"},
		{"ListLimitNotInteger", "GET", "/api/todos?limit=ten", nil, 422, "invalid", "limit"},
		{"ListSkipNegative", "GET", "/api/todos?skip=-1", nil, 422, "invalid", "skip"},
		{"ListSkipNotInteger", "GET", "/api/todos?skip=abc", nil, 422, "invalid", "skip"},
		{"ListSkipFraction", "GET", "/api/todos?skip=1.5", nil, 422, "invalid", "skip"},
		{"ListSkipOverflow", "GET", "/api/todos?skip=99999999999999999999", nil, 422, "invalid", "skip"},
		{"ListIsCompleteMaybe", "GET", "/api/todos?is_complete=maybe", nil, 422, "invalid", "is_complete"},

		// Bad ids in the path.
		{"GetBadUUID", "GET", "/api/todos/not-a-uuid", nil, 422, "invalid", "id"},
		{"GetUUIDWithoutDashes", "GET", "/api/todos/" + strings.ReplaceAll(uuid.NewString(), "-", ""), nil, 422, "invalid", "id"},
		{"GetUUIDInBraces", "GET", "/api/todos/" + url.PathEscape("{"+uuid.NewString()+"}"), nil, 422, "invalid", "id"},
		{"UpdateBadUUID", "PUT", "/api/todos/not-a-uuid", `{"title":"t"}`, 422, "invalid", "id"},
		{"ToggleBadUUID", "PATCH", "/api/todos/not-a-uuid", `{"is_complete":true}`, 422, "invalid", "id"},
		{"DeleteBadUUID", "DELETE", "/api/todos/not-a-uuid", nil, 422, "invalid", "id"},

		// PUT /api/todos/{id}
		{"UpdateNoFields", "PUT", idPath, `{}`, 422, "invalid", ""},
		{"UpdateOnlyNulls", "PUT", idPath, `{"title":null,"description":null,"is_complete":null}`, 422, "invalid", ""},
		{"UpdateOnlyUnknownFields", "PUT", idPath, `{"priority":1}`, 422, "invalid", ""},
		{"UpdateTitleEmpty", "PUT", idPath, `{"title":""}`, 422, "invalid", "title"},
		{"UpdateTitleWhitespaceOnly", "PUT", idPath, `{"title":"   "}`, 422, "invalid", "title"},
		{"UpdateTitle501FourByteRunes", "PUT", idPath, map[string]string{"title": strings.Repeat("😀", 501)}, 422, "invalid", "title"},
		{"UpdateDescription2001", "PUT", idPath, map[string]string{"description": strings.Repeat("d", 2001)}, 422, "invalid", "description"},
		{"UpdateValidTitleBadDescription", "PUT", idPath, map[string]string{"title": "ok", "description": strings.Repeat("d", 2001)}, 422, "invalid", "description"},
		{"UpdateTitleNumber", "PUT", idPath, `{"title":1}`, 422, "invalid", "title"},
		{"UpdateIsCompleteString", "PUT", idPath, `{"is_complete":"yes"}`, 422, "invalid", "is_complete"},
		{"UpdateMalformedJSON", "PUT", idPath, `{"title"`, 400, "bad_request", ""},
		{"UpdateEmptyBody", "PUT", idPath, "", 400, "bad_request", ""},
		{"UpdateArrayBody", "PUT", idPath, `[]`, 400, "bad_request", ""},

		// PATCH /api/todos/{id}
		{"ToggleMissing", "PATCH", idPath, `{}`, 422, "invalid", "is_complete"},
		{"ToggleNull", "PATCH", idPath, `{"is_complete":null}`, 422, "invalid", "is_complete"},
		{"ToggleString", "PATCH", idPath, `{"is_complete":"true"}`, 422, "invalid", "is_complete"},
		{"ToggleNumber", "PATCH", idPath, `{"is_complete":1}`, 422, "invalid", "is_complete"},
		{"ToggleTitleOnly", "PATCH", idPath, `{"title":"t"}`, 422, "invalid", "is_complete"},
		{"ToggleMalformedJSON", "PATCH", idPath, `{is_complete:true}`, 400, "bad_request", ""},
		{"ToggleEmptyBody", "PATCH", idPath, "", 400, "bad_request", ""},
		{"ToggleArrayBody", "PATCH", idPath, `[true]`, 400, "bad_request", ""},
	}
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, b, nil)
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					u, token := ts.user(t)
					seed := postTodo(t, ts, token, map[string]string{"title": "Untouched", "description": "as it was"})
					before := snapshot(t, ts, u.ID, token)

					path := strings.Replace(tt.path, "{id}", seed.ID, 1)
					status, header, data := send(t, ts, tt.method, path, bearerHeader(token), tt.body)
					checkError(t, status, header, data, tt.wantStatus, tt.wantCode, tt.wantField)

					if after := snapshot(t, ts, u.ID, token); after != before {
						t.Errorf("a rejected request changed the user's todos:\ngot  %s\nwant %s", after, before)
					}
				})
			}
		})
	}
}

// Another user's todo is indistinguishable from a missing one.
func TestTodoOtherUsersTodoIsNotFound(t *testing.T) {
	ops := []struct {
		name   string
		method string
		body   any
	}{
		{"Get", "GET", nil},
		{"Update", "PUT", `{"title":"hijacked","is_complete":true}`},
		{"Toggle", "PATCH", `{"is_complete":true}`},
		{"Delete", "DELETE", nil},
	}
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, b, nil)
			a, tokenA := ts.user(t)
			_, tokenB := ts.user(t)
			todoA := postTodo(t, ts, tokenA, map[string]string{"title": "A's secret", "description": "for A only"})
			_, wantA := ts.do(t, "GET", "/api/todos/"+todoA.ID, tokenA, nil)
			beforeA := snapshot(t, ts, a.ID, tokenA)

			ids := []struct{ name, id string }{{"LowerCaseID", todoA.ID}, {"UpperCaseID", strings.ToUpper(todoA.ID)}}
			for _, op := range ops {
				for _, id := range ids {
					t.Run(op.name+id.name, func(t *testing.T) {
						gotStatus, gotHeader, got := send(t, ts, op.method, "/api/todos/"+id.id, bearerHeader(tokenB), op.body)
						wantStatus, _, want := send(t, ts, op.method, "/api/todos/"+uuid.NewString(), bearerHeader(tokenB), op.body)
						if gotStatus != wantStatus || !bytes.Equal(got, want) {
							t.Errorf("user B on A's todo: got %d %s, want %d %s (as for a missing todo)", gotStatus, got, wantStatus, want)
						}
						checkError(t, gotStatus, gotHeader, got, http.StatusNotFound, "not_found", "")
					})
				}
			}

			todoB := postTodo(t, ts, tokenB, map[string]string{"title": "B's own"})
			listB, _ := getList(t, ts, tokenB, "?limit=1000")
			if got := todoIDs(listB.Todos); listB.Total != 1 || !slices.Equal(got, []string{todoB.ID}) {
				t.Errorf("B's list: got %d %v, want only B's %s", listB.Total, got, todoB.ID)
			}
			if _, gotA := ts.do(t, "GET", "/api/todos/"+todoA.ID, tokenA, nil); !bytes.Equal(gotA, wantA) {
				t.Errorf("A's todo after B's attempts: got %s, want %s", gotA, wantA)
			}
			if afterA := snapshot(t, ts, a.ID, tokenA); afterA != beforeA {
				t.Errorf("A's todos after B's attempts and B's create:\ngot  %s\nwant %s", afterA, beforeA)
			}
		})
	}
}

func TestTodoRoutesRequireAuth(t *testing.T) {
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, b, nil)
			owner, token := ts.user(t)
			td := postTodo(t, ts, token, map[string]string{"title": "Mine"})
			before := snapshot(t, ts, owner.ID, token)

			expired, err := ts.JWKS.Issuer.Token(owner, -time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			ghost, err := ts.JWKS.Issuer.Token(store.User{ID: store.NewUserID(), Email: "ghost@example.com"}, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			headers := []struct {
				name  string
				value string // "": no Authorization header
			}{
				{"NoHeader", ""},
				{"BasicScheme", "Basic dXNlcjpwYXNz"},
				{"BearerWithoutToken", "Bearer"},
				{"NotAJWT", "Bearer not-a-jwt"},
				{"BadSignature", "Bearer " + token[:len(token)-4] + "AAAA"},
				{"Expired", "Bearer " + expired},
				{"UnknownUser", "Bearer " + ghost},
			}
			routes := []struct {
				name, method, path string
				body               any
			}{
				{"List", "GET", "/api/todos", nil},
				{"Create", "POST", "/api/todos", `{"title":"sneaky"}`},
				{"Get", "GET", "/api/todos/" + td.ID, nil},
				{"Update", "PUT", "/api/todos/" + td.ID, `{"title":"sneaky"}`},
				{"Toggle", "PATCH", "/api/todos/" + td.ID, `{"is_complete":true}`},
				{"Delete", "DELETE", "/api/todos/" + td.ID, nil},
			}
			for _, r := range routes {
				for _, h := range headers {
					t.Run(r.name+h.name, func(t *testing.T) {
						header := map[string]string{}
						if h.value != "" {
							header["Authorization"] = h.value
						}
						status, respHeader, data := send(t, ts, r.method, r.path, header, r.body)
						checkError(t, status, respHeader, data, http.StatusUnauthorized, "unauthorized", "")
						if got := respHeader.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
							t.Errorf("WWW-Authenticate: got %q, want a Bearer challenge", got)
						}
					})
				}
			}
			if after := snapshot(t, ts, owner.ID, token); after != before {
				t.Errorf("unauthenticated requests changed the owner's todos:\ngot  %s\nwant %s", after, before)
			}
		})
	}
}

func TestHandlerPanicAnswersInternalErrorAndServerKeepsServing(t *testing.T) {
	panics := []struct {
		name  string
		value any
	}{
		{"String", "boom"},
		{"Error", errors.New("secret database password in a panic")},
		{"NilMap", nil}, // a real nil-map write
	}
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			ts := startServerWith(t, b, func(s *Server) {
				s.app.Get("/api/test-panic/:kind", func(c *fiber.Ctx) error {
					for _, p := range panics {
						if p.name == c.Params("kind") && p.value != nil {
							panic(p.value)
						}
					}
					var m map[string]int
					m["x"]++
					return nil
				})
			})
			_, token := ts.user(t)
			for _, p := range panics {
				t.Run(p.name, func(t *testing.T) {
					status, header, data := send(t, ts, "GET", "/api/test-panic/"+p.name, bearerHeader(token), nil)
					if got, want := string(data), `{"detail":"internal error","code":"internal"}`; status != http.StatusInternalServerError || got != want {
						t.Errorf("got %d %s, want 500 %s", status, got, want)
					}
					if ct := header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
						t.Errorf("Content-Type: got %q, want application/json", ct)
					}
					td := postTodo(t, ts, token, map[string]string{"title": "after a panic"})
					if status, data := ts.do(t, "GET", "/api/todos/"+td.ID, token, nil); status != http.StatusOK {
						t.Errorf("GET after the panic: got %d %s, want 200", status, data)
					}
				})
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func jsonString(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(b)
}
