package agent

import (
	"context"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/evotodo/evo/store"
	"github.com/evotodo/evo/store/storetest"
)

func TestBuiltinParseIntent(t *testing.T) {
	desc := func(s string) *string { return &s }
	tests := []struct {
		in   string
		want Intent
	}{
		// add
		{"add buy milk", Intent{Kind: IntentAdd, Title: "buy milk"}},
		{"Add Buy milk", Intent{Kind: IntentAdd, Title: "Buy milk"}},
		{"add buy milk: 2 litres", Intent{Kind: IntentAdd, Title: "buy milk", Description: desc("2 litres")}},
		{"add: buy milk", Intent{Kind: IntentAdd, Title: "buy milk"}},
		{"please add buy milk to my list", Intent{Kind: IntentAdd, Title: "buy milk"}},
		{"add a task to buy milk", Intent{Kind: IntentAdd, Title: "buy milk"}},
		{"add task: call mom", Intent{Kind: IntentAdd, Title: "call mom"}},
		{"new task buy milk", Intent{Kind: IntentAdd, Title: "buy milk"}},
		{"remind me to call mom", Intent{Kind: IntentAdd, Title: "call mom"}},
		{"create a todo called pay rent", Intent{Kind: IntentAdd, Title: "pay rent"}},
		{`add "buy milk"`, Intent{Kind: IntentAdd, Title: "buy milk"}},
		{"add to my list: buy milk", Intent{Kind: IntentAdd, Title: "buy milk"}},
		{"can you add call at 10:30, thanks", Intent{Kind: IntentAdd, Title: "call at 10:30"}},
		{"add", Intent{Kind: IntentAdd}},
		// list
		{"list", Intent{Kind: IntentList, Status: "all"}},
		{"what's on my list?", Intent{Kind: IntentList, Status: "all"}},
		{"What is on my todo list", Intent{Kind: IntentList, Status: "all"}},
		{"show my tasks", Intent{Kind: IntentList, Status: "all"}},
		{"what do I have to do?", Intent{Kind: IntentList, Status: "all"}},
		{"show pending", Intent{Kind: IntentList, Status: "pending"}},
		{"what's left", Intent{Kind: IntentList, Status: "pending"}},
		{"pending tasks", Intent{Kind: IntentList, Status: "pending"}},
		{"show completed", Intent{Kind: IntentList, Status: "completed"}},
		{"list completed tasks", Intent{Kind: IntentList, Status: "completed"}},
		{"what have I done?", Intent{Kind: IntentList, Status: "completed"}},
		// complete
		{"done with milk", Intent{Kind: IntentComplete, Target: "milk"}},
		{"complete milk", Intent{Kind: IntentComplete, Target: "milk"}},
		{"mark milk as done", Intent{Kind: IntentComplete, Target: "milk"}},
		{"Mark milk complete", Intent{Kind: IntentComplete, Target: "milk"}},
		{"check off milk", Intent{Kind: IntentComplete, Target: "milk"}},
		{"milk is done!", Intent{Kind: IntentComplete, Target: "milk"}},
		{"I'm done with the milk task", Intent{Kind: IntentComplete, Target: "milk"}},
		{"finished buy milk", Intent{Kind: IntentComplete, Target: "buy milk"}},
		// reopen
		{"reopen milk", Intent{Kind: IntentReopen, Target: "milk"}},
		{"undo milk", Intent{Kind: IntentReopen, Target: "milk"}},
		{"mark milk as not done", Intent{Kind: IntentReopen, Target: "milk"}},
		{"mark milk as pending", Intent{Kind: IntentReopen, Target: "milk"}},
		{"uncheck milk", Intent{Kind: IntentReopen, Target: "milk"}},
		// rename
		{"rename milk to oat milk", Intent{Kind: IntentRename, Target: "milk", Title: "oat milk"}},
		{"change milk to oat milk", Intent{Kind: IntentRename, Target: "milk", Title: "oat milk"}},
		{"rename the milk task to: oat milk", Intent{Kind: IntentRename, Target: "milk", Title: "oat milk"}},
		{`update "milk" to "oat milk"`, Intent{Kind: IntentRename, Target: "milk", Title: "oat milk"}},
		{"rename milk", Intent{Kind: IntentRename, Target: "milk"}},
		// delete
		{"delete milk", Intent{Kind: IntentDelete, Target: "milk"}},
		{"remove milk", Intent{Kind: IntentDelete, Target: "milk"}},
		{"remove milk from my list", Intent{Kind: IntentDelete, Target: "milk"}},
		{"please get rid of milk.", Intent{Kind: IntentDelete, Target: "milk"}},
		{"delete the milk task", Intent{Kind: IntentDelete, Target: "milk"}},
		// help and the rest
		{"help", Intent{Kind: IntentHelp}},
		{"hello", Intent{Kind: IntentHelp}},
		{"what can you do?", Intent{Kind: IntentHelp}},
		{"", Intent{Kind: IntentHelp}},
		{"what's the weather", Intent{Kind: IntentUnknown}},
		{"asdf qwer", Intent{Kind: IntentUnknown}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got := ParseIntent(tt.in)
			if got.Kind != tt.want.Kind || got.Title != tt.want.Title || got.Target != tt.want.Target || got.Status != tt.want.Status ||
				(got.Description == nil) != (tt.want.Description == nil) || (got.Description != nil && *got.Description != *tt.want.Description) {
				t.Fatalf("got %+v (description %v), want %+v", got, deref(got.Description), tt.want)
			}
		})
	}
}

func deref(s *string) any {
	if s == nil {
		return nil
	}
	return *s
}

// FuzzBuiltinParseIntent: the parser never panics and always names a kind.
func FuzzBuiltinParseIntent(f *testing.F) {
	for _, s := range []string{"add buy milk: 2 litres", "mark  as done", "rename to to to", "add :", "\x00\xff", "“”", "delete ''", strings.Repeat("a ", 3000)} {
		f.Add(s)
	}
	kinds := []string{IntentUnknown, IntentHelp, IntentAdd, IntentList, IntentComplete, IntentReopen, IntentRename, IntentDelete}
	f.Fuzz(func(t *testing.T, s string) {
		in := ParseIntent(s)
		if !slices.Contains(kinds, in.Kind) || !utf8.ValidString(in.Title) || !utf8.ValidString(in.Target) {
			t.Fatalf("ParseIntent(%q) = %+v", s, in)
		}
	})
}

// builtinEnv is the builtin agent over a real store, with two users.
type builtinEnv struct {
	todos  *store.Todos
	runner *Runner
	a, b   string
}

func newBuiltinEnv(t *testing.T) *builtinEnv {
	t.Helper()
	db := storetest.SQLite(t)
	todos := store.NewTodos(db, nil)
	return &builtinEnv{
		todos:  todos,
		runner: NewRunner(Builtin{}, Tools(todos), Config{}, nil),
		a:      storetest.User(t, db).ID,
		b:      storetest.User(t, db).ID,
	}
}

// seed gives user tasks; a title ending in " ✓" is completed.
func (e *builtinEnv) seed(t *testing.T, user string, titles ...string) {
	t.Helper()
	ctx := context.Background()
	for _, title := range titles {
		done := strings.HasSuffix(title, " ✓")
		td, err := e.todos.Create(ctx, user, store.TodoCreate{Title: strings.TrimSuffix(title, " ✓")})
		if err != nil {
			t.Fatal(err)
		}
		if done {
			if _, err := e.todos.Update(ctx, user, td.ID, store.TodoUpdate{IsComplete: new(true)}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// state lists user's tasks, oldest first, completed ones marked " ✓".
func (e *builtinEnv) state(t *testing.T, user string) []string {
	t.Helper()
	todos, _, err := e.todos.List(context.Background(), user, store.TodoFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, td := range slices.Backward(todos) {
		s := td.Title
		if td.Description != nil {
			s += " (" + *td.Description + ")"
		}
		if td.IsComplete {
			s += " ✓"
		}
		out = append(out, s)
	}
	return out
}

func (e *builtinEnv) chat(t *testing.T, user, msg string) (Reply, *recordSink) {
	t.Helper()
	sink := &recordSink{}
	reply, err := e.runner.Run(context.Background(), Request{UserID: user, Message: msg}, sink)
	if err != nil {
		t.Fatalf("%q: %v", msg, err)
	}
	if got := strings.Join(sink.tokens, ""); got != reply.Text {
		t.Fatalf("streamed %q, reply %q", got, reply.Text)
	}
	return reply, sink
}

// TestBuiltinCommands runs each command, in several phrasings, through the
// runner and the real tools, and checks the reply and the list after it.
func TestBuiltinCommands(t *testing.T) {
	tests := []struct {
		name  string
		seed  []string
		msgs  []string
		reply string
		after []string
	}{
		{"Add", nil,
			[]string{"add buy milk", "Add: buy milk", "please add a task to buy milk", "remind me to buy milk", "add buy milk to my list"},
			"Added “buy milk” to your list.", []string{"buy milk"}},
		{"AddWithNote", nil,
			[]string{"add buy milk: 2 litres", "new task buy milk: 2 litres"},
			"Added “buy milk” to your list, with the note “2 litres”.", []string{"buy milk (2 litres)"}},
		{"AddNothing", nil, []string{"add", "add:"}, "What should I add?", nil},
		{"ListAll", []string{"buy milk", "call mom ✓"},
			[]string{"list", "what's on my list", "show my tasks", "What is on my todo list?"},
			"You have 2 tasks:\n- call mom (done)\n- buy milk", []string{"buy milk", "call mom ✓"}},
		{"ListPending", []string{"buy milk", "call mom ✓"},
			[]string{"show pending", "what's left?", "pending tasks"},
			"You have 1 pending task:\n- buy milk", []string{"buy milk", "call mom ✓"}},
		{"ListCompleted", []string{"buy milk", "call mom ✓"},
			[]string{"show completed", "what have I done", "list completed tasks"},
			"You have 1 completed task:\n- call mom", []string{"buy milk", "call mom ✓"}},
		{"ListEmpty", nil, []string{"list"}, "Your list is empty.", nil},
		{"Complete", []string{"buy milk", "call mom"},
			[]string{"done with milk", "complete milk", "mark milk as done", "Mark Milk done", "check off milk", "milk is done", "I finished the milk task"},
			"Marked “buy milk” as done.", []string{"buy milk ✓", "call mom"}},
		{"Reopen", []string{"buy milk ✓", "call mom"},
			[]string{"reopen milk", "undo milk", "mark milk as not done", "mark milk as pending"},
			"Reopened “buy milk”: it is pending again.", []string{"buy milk", "call mom"}},
		{"Rename", []string{"buy milk", "call mom"},
			[]string{"rename milk to oat milk", "change milk to oat milk", "rename the milk task to: oat milk", `update "buy milk" to "oat milk"`},
			"Renamed “buy milk” to “oat milk”.", []string{"oat milk", "call mom"}},
		{"Delete", []string{"buy milk", "call mom"},
			[]string{"delete milk", "remove milk", "remove milk from my list", "get rid of milk", "delete the buy milk task"},
			"Deleted “buy milk”.", []string{"call mom"}},
		{"ExactTitleWins", []string{"milk", "oat milk"},
			[]string{"delete milk"}, "Deleted “milk”.", []string{"oat milk"}},
		{"Ambiguous", []string{"buy milk", "oat milk", "call mom"},
			[]string{"done with milk", "delete milk"},
			"Several tasks match “milk”:\n1. oat milk (id ", []string{"buy milk", "oat milk", "call mom"}},
		{"NoMatch", []string{"buy milk"},
			[]string{"delete bread", "rename bread to rye"},
			"You have no task matching “bread”.", []string{"buy milk"}},
		{"NoPendingMatch", []string{"buy milk ✓"},
			[]string{"done with milk"},
			"You have no pending task matching “milk”.", []string{"buy milk ✓"}},
		{"RenameNeedsATitle", []string{"buy milk"}, []string{"rename milk"}, "What should I rename “milk” to?", []string{"buy milk"}},
		{"Help", nil, []string{"help", "hi", "what can you do?"}, "I'm Evo's built-in assistant", nil},
		{"Unknown", nil, []string{"what's the weather like"}, "Sorry, I didn't understand that.", nil},
	}
	for _, tt := range tests {
		for _, msg := range tt.msgs {
			t.Run(tt.name+"/"+msg, func(t *testing.T) {
				e := newBuiltinEnv(t)
				e.seed(t, e.a, tt.seed...)
				reply, _ := e.chat(t, e.a, msg)
				if !strings.HasPrefix(reply.Text, tt.reply) {
					t.Fatalf("reply: got %q, want it to start with %q", reply.Text, tt.reply)
				}
				if got := e.state(t, e.a); !slices.Equal(got, tt.after) {
					t.Fatalf("list after: got %q, want %q", got, tt.after)
				}
			})
		}
	}
}

// TestBuiltinStreamsWordByWord: the reply reaches the sink a word at a time.
func TestBuiltinStreamsWordByWord(t *testing.T) {
	e := newBuiltinEnv(t)
	reply, sink := e.chat(t, e.a, "add buy milk")
	if want := []string{"Added ", "“buy ", "milk” ", "to ", "your ", "list."}; !slices.Equal(sink.tokens, want) {
		t.Fatalf("tokens: got %q, want %q", sink.tokens, want)
	}
	if len(sink.tools) != 1 || sink.tools[0].Name != "add_task" || reply.Steps != 2 {
		t.Fatalf("tools %+v, steps %d", sink.tools, reply.Steps)
	}
}

// TestBuiltinNeverTouchesAnotherUsersTodos: with the same titles on both
// sides, B's commands change only B's list.
func TestBuiltinNeverTouchesAnotherUsersTodos(t *testing.T) {
	e := newBuiltinEnv(t)
	e.seed(t, e.a, "buy milk", "call mom ✓", "walk the dog")
	e.seed(t, e.b, "buy milk", "call mom ✓", "walk the dog")
	before := e.state(t, e.a)
	for _, msg := range []string{"done with milk", "reopen mom", "rename dog to walk the cat", "delete milk", "add buy bread", "list"} {
		e.chat(t, e.b, msg)
	}
	if got := e.state(t, e.a); !slices.Equal(got, before) {
		t.Fatalf("A's list changed: got %q, want %q", got, before)
	}
	if got, want := e.state(t, e.b), []string{"call mom", "walk the cat", "buy bread"}; !slices.Equal(got, want) {
		t.Fatalf("B's list: got %q, want %q", got, want)
	}
	// A title that only A has is not found for B.
	e.seed(t, e.a, "secret plan")
	if reply, _ := e.chat(t, e.b, "delete secret plan"); !strings.HasPrefix(reply.Text, "You have no task matching") {
		t.Fatalf("B deleting A's task: got %q", reply.Text)
	}
	if got := e.state(t, e.a); len(got) != 4 {
		t.Fatalf("A's list: got %q", got)
	}
}

// TestBuiltinChoices: after "Several tasks match", the next message picks
// one by number, ordinal or id, read back from the answer in the history;
// the titles may be the same. A pick out of range lists them again, and the
// pick after that still works.
func TestBuiltinChoices(t *testing.T) {
	type step struct{ msg, reply string }
	tests := []struct {
		name  string
		steps []step
		after []string
	}{
		// The list is newest first: oat milk, buy milk: 2 litres, buy milk.
		{"Number", []step{{"done with milk", "Several tasks match “milk”:\n1. oat milk (id "}, {"2", "Marked “buy milk” as done."}},
			[]string{"buy milk", "buy milk (2 litres) ✓", "oat milk", "call mom"}},
		{"Ordinal", []step{{"done with milk", "Several"}, {"the third one", "Marked “buy milk” as done."}},
			[]string{"buy milk ✓", "buy milk (2 litres)", "oat milk", "call mom"}},
		{"Last", []step{{"delete milk", "Several"}, {"the last one", "Deleted “buy milk”."}},
			[]string{"buy milk (2 litres)", "oat milk", "call mom"}},
		{"VerbAndPick", []step{{"done with milk", "Several"}, {"delete the first one", "Deleted “oat milk”."}},
			[]string{"buy milk", "buy milk (2 litres)", "call mom"}},
		{"Rename", []step{{"rename milk to oat milk", "Several"}, {"#2", "Renamed “buy milk” to “oat milk”."}},
			[]string{"buy milk", "oat milk (2 litres)", "oat milk", "call mom"}},
		{"OutOfRange", []step{{"done with milk", "Several"}, {"5", "There is no choice 5. The tasks were:\n1. oat milk (id "},
			{"number 2", "Marked “buy milk” as done."}},
			[]string{"buy milk", "buy milk (2 litres) ✓", "oat milk", "call mom"}},
		{"NotRemembered", []step{{"done with milk", "Several"}, {"list", "You have 4 tasks"}, {"1", "Sorry, I didn't understand that."}},
			[]string{"buy milk", "buy milk (2 litres)", "oat milk", "call mom"}},
		{"NoList", []step{{"1", "Sorry, I didn't understand that."}},
			[]string{"buy milk", "buy milk (2 litres)", "oat milk", "call mom"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newBuiltinEnv(t)
			e.seed(t, e.a, "buy milk")
			if _, err := e.todos.Create(context.Background(), e.a, store.TodoCreate{Title: "buy milk", Description: new("2 litres")}); err != nil {
				t.Fatal(err)
			}
			e.seed(t, e.a, "oat milk", "call mom")
			var history []Exchange
			for _, st := range tt.steps {
				reply, err := e.runner.Run(context.Background(), Request{UserID: e.a, Message: st.msg, History: history}, &recordSink{})
				if err != nil || !strings.HasPrefix(reply.Text, st.reply) {
					t.Fatalf("%q: got %q (%v), want it to start with %q", st.msg, reply.Text, err, st.reply)
				}
				history = append(history, Exchange{Message: st.msg, Response: reply.Text})
			}
			if got := e.state(t, e.a); !slices.Equal(got, tt.after) {
				t.Fatalf("list after: got %q, want %q", got, tt.after)
			}
		})
	}
	t.Run("ByID", func(t *testing.T) {
		e := newBuiltinEnv(t)
		e.seed(t, e.a, "buy milk", "buy milk")
		reply, _ := e.chat(t, e.a, "done with milk")
		ids := choices(reply.Text)
		if len(ids) != 2 || len(ids[0]) < idLen {
			t.Fatalf("choices: got %q from %q", ids, reply.Text)
		}
		if reply, _ := e.chat(t, e.a, "done with "+ids[1]); reply.Text != "Marked “buy milk” as done." {
			t.Fatalf("by id: got %q", reply.Text)
		}
		if got := e.state(t, e.a); !slices.Equal(got, []string{"buy milk ✓", "buy milk"}) {
			t.Fatalf("list after: got %q", got)
		}
	})
}
