package app

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	gojson "github.com/goccy/go-json"

	"github.com/evotodo/evo/store"
)

// TestJSONEncoder: the server's JSON encoder (go-json, for speed) writes the bytes
// encoding/json writes, on strings that need escaping and on times of any precision:
// the API's answers are those of the seed.
func TestJSONEncoder(t *testing.T) {
	desc := "a <b> & \"c\"\n"
	at := time.Date(2026, 11, 28, 12, 34, 53, 396076000, time.UTC)
	strs := []string{
		"", "plain", `quote " backslash \ slash /`, "<script>&amp;</script>",
		"\x00\x01\x07\b\f\n\r\t\x1f\x7f", "héllo wörld ✓ 🙂", "line\u2028para\u2029end",
		"bad \xff utf8 \xc3", "\xed\xa0\x80 surrogate", "tail\xe2\x80",
	}
	var all []string
	for c := range 256 { // every single byte
		all = append(all, string([]byte{byte(c)}))
	}
	all = append(all, strs...)
	var vs []any
	for _, s := range all {
		vs = append(vs,
			store.Todo{ID: s, UserID: "u", Title: s, Description: &s, CreatedAt: at, UpdatedAt: at},
			store.Todo{ID: "id", UserID: s, Title: "t", IsComplete: true, CreatedAt: at.Truncate(time.Second), UpdatedAt: at.Add(time.Nanosecond)},
			ErrorBody{Detail: s, Code: "bad_request", Field: s},
		)
	}
	for _, at := range []time.Time{{}, at, at.Truncate(time.Millisecond), at.In(time.FixedZone("x", 5*3600+30*60))} {
		vs = append(vs, store.Todo{ID: "x", Title: "y", Description: &desc, CreatedAt: at, UpdatedAt: at})
	}
	vs = append(vs, TodoList{Todos: []store.Todo{}}, TodoList{Todos: []store.Todo{{ID: "a", Title: "<"}, {ID: "b", Description: &desc}}, Total: 42})
	for _, v := range vs {
		want, werr := json.Marshal(v)
		got, err := gojson.Marshal(v)
		if err != nil || werr != nil || !bytes.Equal(got, want) {
			t.Errorf("go-json %s, %v\nencoding/json %s, %v", got, err, want, werr)
		}
	}
	bad := store.Todo{ID: "x", CreatedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}
	if _, err := gojson.Marshal(bad); err == nil {
		t.Error("go-json encoded a year 10000, which encoding/json refuses")
	}
}

// BenchmarkTodoListJSON is the body of GET /api/todos?limit=20: encoding/json against
// the server's encoder.
func BenchmarkTodoListJSON(b *testing.B) {
	desc := "a description"
	at := time.Date(2026, 11, 28, 12, 34, 53, 396076000, time.UTC)
	todos := make([]store.Todo, 20)
	for i := range todos {
		todos[i] = store.Todo{ID: "938a7a06-fe90-401c-84b6-6438912d8ca6", UserID: "NLPE26C4WGK5ZRBV4TQCRXSUD7YP2Z35",
			Title: "made by the REST benchmark", Description: &desc, CreatedAt: at, UpdatedAt: at}
	}
	for name, marshal := range map[string]func(any) ([]byte, error){"encoding-json": json.Marshal, "go-json": gojson.Marshal} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := marshal(TodoList{Todos: todos, Total: 25}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
