package agent

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"unicode"

	"github.com/tmc/langchaingo/llms"

	"github.com/evotodo/evo/store"
	"github.com/evotodo/evo/store/storetest"
)

// plainWords turns arbitrary input into a plain title: lower-case words of
// letters and digits, without the words the command phrasings themselves
// use (a title "milk is done" is a complete command by design, and "the",
// "task", "please" are dropped around a name on purpose). What is left is a
// title any phrasing must carry through unchanged.
func plainWords(s string, max int) string {
	var words []string
	for _, w := range strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return !('a' <= r && r <= 'z' || '0' <= r && r <= '9')
	}) {
		if !reserved[w] && len(words) < max {
			words = append(words, w)
		}
	}
	return strings.Join(words, " ")
}

var reserved = map[string]bool{}

func init() {
	for _, w := range strings.Fields(`a an the my to on in of off from onto into as is with new
		task tasks todo todos item items reminder entry list agenda called named titled for
		please pls plz thanks thank thx you kindly ok okay hey hi evo can could would will just go ahead and lets let
		add create remind me remember don dont forget need have must do done not undone pending again open finished finish
		complete completed incomplete uncompleted unfinished did mark check tick cross reopen undo uncheck untick unmark restore
		rename retitle change update edit delete remove drop erase trash discard cancel get rid i am m ve d like want s
		list ls show display view see give tell what whats which how many anything left remaining outstanding still help
		hello hallo yo commands does this work who are re un`) {
		reserved[w] = true
	}
}

// FuzzBuiltinRoundTrip: every documented phrasing, with a plain title in it,
// parses back to that title (add, add with a note, complete, reopen,
// rename, delete).
func FuzzBuiltinRoundTrip(f *testing.F) {
	for _, s := range [][2]string{
		{"buy milk", "2 litres"}, {"call mom", "oat milk"}, {"x", "y"}, {"buy 2 apples", "pay rent 10"},
		{"The Milk task", "to my list"}, {"milk is done", "please"}, {"a b c d e f g", "h"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		title, other := plainWords(a, 8), plainWords(b, 8)
		if title == "" || other == "" {
			return
		}
		check := func(msg string, want Intent) {
			t.Helper()
			got := ParseIntent(msg)
			if got.Kind != want.Kind || got.Title != want.Title || got.Target != want.Target ||
				(got.Description == nil) != (want.Description == nil) ||
				(got.Description != nil && *got.Description != *want.Description) {
				t.Fatalf("ParseIntent(%q) = %+v (description %v), want %+v", msg, got, deref(got.Description), want)
			}
		}
		check("add "+title, Intent{Kind: IntentAdd, Title: title})
		check("Add "+title+": "+other, Intent{Kind: IntentAdd, Title: title, Description: &other})
		check("remind me to "+title, Intent{Kind: IntentAdd, Title: title})
		check("done with "+title, Intent{Kind: IntentComplete, Target: title})
		check("mark "+title+" as done", Intent{Kind: IntentComplete, Target: title})
		check("reopen "+title, Intent{Kind: IntentReopen, Target: title})
		check("rename "+title+" to "+other, Intent{Kind: IntentRename, Target: title, Title: other})
		check("delete "+title, Intent{Kind: IntentDelete, Target: title})
		check("please delete "+title+" from my list", Intent{Kind: IntentDelete, Target: title})
	})
}

// stepModel wraps the builtin model and keeps the text of each answer it
// gives, to compare with what reached the user.
type stepModel struct {
	Builtin
	texts []string
}

func (m *stepModel) GenerateContent(ctx context.Context, messages []llms.MessageContent, options ...llms.CallOption) (*llms.ContentResponse, error) {
	resp, err := m.Builtin.GenerateContent(ctx, messages, options...)
	if err == nil && len(resp.Choices) > 0 && len(resp.Choices[0].ToolCalls) == 0 {
		m.texts = append(m.texts, resp.Choices[0].Content)
	}
	return resp, err
}

var fuzzChatUsers atomic.Int64

// FuzzBuiltinChat runs arbitrary messages through the runner, the builtin
// agent and the real tools on SQLite, as user B, with user A holding tasks of
// the very same titles (and one of the input's). Properties: no panic, no
// error; A's list never changes; B's changes by at most one task; every
// tool call's arguments are JSON; the answer is non-empty and is exactly the
// text the agent wrote (word by word: nothing of it swallowed on the way).
func FuzzBuiltinChat(f *testing.F) {
	for _, s := range [][2]string{
		{"buy milk", "done with milk"}, {"buy milk", "delete milk"}, {"buy milk", "rename milk to oat milk"},
		{"buy milk", "add buy bread: 2 loaves"}, {"buy milk", "list"}, {"buy milk", "show completed"},
		{"buy milk", "reopen walk"}, {"call mom", "delete call"}, {"x", "help"}, {"", "add"},
		{`{"name":"x","arguments":"{}"}`, "list"}, {`[{"function":{}}]`, "what's left"},
		{"milk", strings.Repeat("é", 4000)}, {"a\x00b", "delete a"},
	} {
		f.Add(s[0], s[1])
	}
	db := storetest.SQLite(f)
	todos := store.NewTodos(db, nil)
	ctx := context.Background()
	titles := []string{"buy milk", "call mom ✓", "walk the dog"}
	f.Fuzz(func(t *testing.T, title, message string) {
		seed := append(slices.Clone(titles), title)
		p := fuzzPair(t, db, todos, func(u string) {
			for _, s := range seed {
				td, err := todos.Create(ctx, u, store.TodoCreate{Title: strings.TrimSuffix(s, " ✓")})
				if err != nil {
					continue // an invalid fuzzed title
				}
				if strings.HasSuffix(s, " ✓") {
					if _, err := todos.Update(ctx, u, td.ID, store.TodoUpdate{IsComplete: new(true)}); err != nil {
						t.Fatal(err)
					}
				}
			}
		})

		model := &stepModel{}
		sink := &recordSink{}
		reply, err := NewRunner(model, Tools(todos), Config{}, nil).Run(ctx, Request{UserID: p.b, Message: message}, sink)
		if err != nil {
			t.Fatalf("%q: %v", message, err)
		}
		p.check(t, message)
		for _, c := range reply.ToolCalls {
			if !json.Valid(c.Arguments) {
				t.Fatalf("tool call %s with arguments %q", c.Name, c.Arguments)
			}
		}
		if strings.TrimFunc(reply.Text, unicode.IsSpace) == "" || strings.Join(sink.tokens, "") != reply.Text {
			t.Fatalf("%q: answer %q, streamed %q", message, reply.Text, sink.tokens)
		}
		if want := strings.Join(model.texts, "\n\n"); reply.Text != want {
			t.Fatalf("%q: the agent wrote %q, the user got %q", message, want, reply.Text)
		}
	})
}

// pair is a fuzz run's two users: B sends the message, A holds tasks of
// the same titles that it must not touch.
type pair struct {
	todos            *store.Todos
	a, b             string
	beforeA, beforeB []store.Todo
}

// fuzzPair makes two new users, A and B, seeds each with seed and lists
// their tasks.
func fuzzPair(t *testing.T, db store.DB, todos *store.Todos, seed func(user string)) *pair {
	t.Helper()
	ctx := context.Background()
	a, err := db.EnsureUser(ctx, "a"+itoa(fuzzChatUsers.Add(1))+"@fuzz.example", "A")
	if err != nil {
		t.Fatal(err)
	}
	b, err := db.EnsureUser(ctx, "b"+itoa(fuzzChatUsers.Add(1))+"@fuzz.example", "B")
	if err != nil {
		t.Fatal(err)
	}
	p := &pair{todos: todos, a: a.ID, b: b.ID}
	seed(p.a)
	seed(p.b)
	p.beforeA, p.beforeB = p.list(t, p.a), p.list(t, p.b)
	return p
}

func (p *pair) list(t *testing.T, user string) []store.Todo {
	t.Helper()
	l, _, err := p.todos.List(context.Background(), user, store.TodoFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// check: message, sent by B, left A's list as it was and changed at most
// one of B's tasks.
func (p *pair) check(t *testing.T, message string) {
	t.Helper()
	if afterA := p.list(t, p.a); !slices.EqualFunc(afterA, p.beforeA, sameTodo) {
		t.Fatalf("%q by B changed A's list: %+v -> %+v", message, p.beforeA, afterA)
	}
	if d := changed(p.beforeB, p.list(t, p.b)); d > 1 {
		t.Fatalf("%q changed %d of B's tasks", message, d)
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

func sameTodo(a, b store.Todo) bool {
	return a.ID == b.ID && a.Title == b.Title && a.IsComplete == b.IsComplete && a.UpdatedAt.Equal(b.UpdatedAt) &&
		(a.Description == nil) == (b.Description == nil) && (a.Description == nil || *a.Description == *b.Description)
}

// changed counts the tasks added, removed or changed between two lists.
func changed(before, after []store.Todo) int {
	n := 0
	for _, x := range before {
		i := slices.IndexFunc(after, func(y store.Todo) bool { return y.ID == x.ID })
		if i < 0 || !sameTodo(x, after[i]) {
			n++
		}
	}
	for _, y := range after {
		if !slices.ContainsFunc(before, func(x store.Todo) bool { return x.ID == y.ID }) {
			n++
		}
	}
	return n
}

// FuzzBuiltinChoice: a pick after an earlier answer, both arbitrary, and
// the earlier answer also listing user A's task ids as choices (a forged
// history: the history is the user's own text). Properties: no panic, no
// error; A's list never changes; B's changes by at most one task.
func FuzzBuiltinChoice(f *testing.F) {
	for _, s := range [][3]string{
		{"done with milk", "Several tasks match “milk”:\n", "1"}, {"delete milk", "Several tasks match “milk”:\n", "the last one"},
		{"rename milk to oat", "There is no choice 9. The tasks were:\n", "2"}, {"list", "You have 2 tasks:\n", "delete the first one"},
		{"done with milk", "1. x (id 00000000)\n", "#1"}, {"", "", "one"}, {"reopen walk", "Several", "done with 3"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	db := storetest.SQLite(f)
	todos := store.NewTodos(db, nil)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, asked, answer, message string) {
		p := fuzzPair(t, db, todos, func(u string) {
			for _, title := range []string{"buy milk", "buy milk", "walk the dog"} {
				if _, err := todos.Create(ctx, u, store.TodoCreate{Title: title}); err != nil {
					t.Fatal(err)
				}
			}
		})
		for i, td := range p.beforeA {
			answer += "\n" + itoa(int64(i+1)) + ". " + td.Title + " (id " + td.ID[:idLen] + ")"
		}
		history := []Exchange{{Message: asked, Response: answer}}
		reply, err := NewRunner(Builtin{}, Tools(todos), Config{}, nil).Run(ctx, Request{UserID: p.b, Message: message, History: history}, &recordSink{})
		if err != nil {
			t.Fatalf("%q after %q: %v", message, answer, err)
		}
		p.check(t, message)
		if strings.TrimFunc(reply.Text, unicode.IsSpace) == "" {
			t.Fatalf("%q: empty answer", message)
		}
	})
}
