package agent

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/evotodo/evo/store"
	"github.com/evotodo/evo/store/storetest"
)

// toolEnv is the tools over a real store of one backend, with two users.
type toolEnv struct {
	db    store.DB
	tools map[string]Tool
	a, b  string // user ids
}

func newToolEnv(t *testing.T, b storetest.Backend) *toolEnv {
	t.Helper()
	db := b.Open(t)
	env := &toolEnv{db: db, tools: map[string]Tool{}}
	for _, tool := range Tools(store.NewTodos(db, nil)) {
		env.tools[tool.Name] = tool
	}
	env.a, env.b = storetest.User(t, db).ID, storetest.User(t, db).ID
	return env
}

// run calls a tool and returns its result and error.
func (e *toolEnv) run(t *testing.T, user, tool, args string) (Result, error) {
	t.Helper()
	tl, ok := e.tools[tool]
	if !ok {
		t.Fatalf("no tool %s", tool)
	}
	return tl.Run(context.Background(), user, json.RawMessage(args))
}

// must calls a tool that must succeed.
func (e *toolEnv) must(t *testing.T, user, tool, args string) Result {
	t.Helper()
	r, err := e.run(t, user, tool, args)
	if err != nil {
		t.Fatalf("%s %s: %v", tool, args, err)
	}
	return r
}

// add creates a task for user and returns it.
func (e *toolEnv) add(t *testing.T, user, title string) Task {
	t.Helper()
	return e.must(t, user, "add_task", jsonArgs(t, map[string]any{"title": title})).Data.(Change).Task
}

func jsonArgs(t *testing.T, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// wantErr checks err's store code and field.
func wantErr(t *testing.T, err error, code, field string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s (field %q)", code, field)
	}
	if got := store.ErrorCode(err); got != code {
		t.Fatalf("got code %s (%v), want %s", got, err, code)
	}
	if got := store.ErrorField(err); got != field {
		t.Fatalf("got field %q (%v), want %q", got, err, field)
	}
}

// events returns the types of user's events, in seq order.
func (e *toolEnv) events(t *testing.T, user string) []string {
	t.Helper()
	evs, err := e.db.EventsSince(context.Background(), user, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, ev := range evs {
		types = append(types, ev.Type)
	}
	return types
}

func TestTools(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Run("Schemas", func(t *testing.T) { testToolSchemas(t, newToolEnv(t, b)) })
			t.Run("AddTask", func(t *testing.T) { testAddTask(t, newToolEnv(t, b)) })
			t.Run("ListTasks", func(t *testing.T) { testListTasks(t, newToolEnv(t, b)) })
			t.Run("CompleteTask", func(t *testing.T) { testCompleteTask(t, newToolEnv(t, b)) })
			t.Run("UpdateTask", func(t *testing.T) { testUpdateTask(t, newToolEnv(t, b)) })
			t.Run("DeleteTask", func(t *testing.T) { testDeleteTask(t, newToolEnv(t, b)) })
			t.Run("TaskIDErrors", func(t *testing.T) { testTaskIDErrors(t, newToolEnv(t, b)) })
			t.Run("Isolation", func(t *testing.T) { testIsolation(t, newToolEnv(t, b)) })
		})
	}
}

func testToolSchemas(t *testing.T, e *toolEnv) {
	var names []string
	for _, tool := range Tools(nil) {
		names = append(names, tool.Name)
		if tool.Description == "" || tool.Run == nil {
			t.Errorf("%s: no description or no Run", tool.Name)
		}
		var s struct {
			Type       string                     `json:"type"`
			Properties map[string]json.RawMessage `json:"properties"`
			Required   []string                   `json:"required"`
		}
		if err := json.Unmarshal(tool.Schema, &s); err != nil {
			t.Fatalf("%s: schema is not JSON: %v", tool.Name, err)
		}
		if s.Type != "object" {
			t.Errorf("%s: schema type %q, want object", tool.Name, s.Type)
		}
		if _, ok := s.Properties["user_id"]; ok {
			t.Errorf("%s: schema offers user_id; the user never comes from the arguments", tool.Name)
		}
		for _, r := range s.Required {
			if _, ok := s.Properties[r]; !ok {
				t.Errorf("%s: required %q is not a property", tool.Name, r)
			}
		}
	}
	want := []string{"add_task", "list_tasks", "complete_task", "delete_task", "update_task"}
	if !slices.Equal(names, want) {
		t.Fatalf("got tools %v, want %v", names, want)
	}
	if !e.tools["list_tasks"].ReadOnly || !e.tools["delete_task"].Destructive || e.tools["add_task"].Destructive {
		t.Error("wrong ReadOnly/Destructive hints")
	}
}

func testAddTask(t *testing.T, e *toolEnv) {
	t.Run("OK", func(t *testing.T) {
		r := e.must(t, e.a, "add_task", `{"title":"Buy milk","description":"2 litres"}`)
		c := r.Data.(Change)
		if c.Status != StatusCreated || c.Title != "Buy milk" || c.TaskID == "" || c.TaskID != c.Task.ID {
			t.Fatalf("got %+v", c)
		}
		if c.Task.Description == nil || *c.Task.Description != "2 litres" || c.Task.Completed {
			t.Fatalf("got task %+v", c.Task)
		}
		if !strings.Contains(r.Text, "Buy milk") {
			t.Errorf("got text %q", r.Text)
		}
		got, err := e.db.GetTodo(context.Background(), e.a, c.TaskID)
		if err != nil || got.Title != "Buy milk" {
			t.Fatalf("stored todo %+v, %v", got, err)
		}
		if got := e.events(t, e.a); !slices.Equal(got, []string{store.EventTodoCreated}) {
			t.Fatalf("got events %v", got)
		}
	})
	t.Run("OKLongest", func(t *testing.T) {
		e.must(t, e.a, "add_task", jsonArgs(t, map[string]any{
			"title": strings.Repeat("é", store.MaxTitleLen), "description": strings.Repeat("d", store.MaxDescriptionLen)}))
	})
	t.Run("OKNullDescription", func(t *testing.T) {
		c := e.must(t, e.a, "add_task", `{"title":"x","description":null}`).Data.(Change)
		if c.Task.Description != nil {
			t.Fatalf("got description %q", *c.Task.Description)
		}
	})
	for _, tc := range []struct {
		name, args, code, field string
	}{
		{"ErrTitleRequired", `{"description":"d"}`, store.CodeInvalid, "title"},
		{"ErrTitleRequiredNullArgs", `null`, store.CodeInvalid, "title"},
		{"ErrTitleRequiredEmptyArgs", ``, store.CodeInvalid, "title"},
		{"ErrTitleBlank", `{"title":"  "}`, store.CodeInvalid, "title"},
		{"ErrTitleTooLong", jsonArgs(t, map[string]any{"title": strings.Repeat("a", store.MaxTitleLen+1)}), store.CodeInvalid, "title"},
		{"ErrTitleType", `{"title":5}`, store.CodeInvalid, "title"},
		{"ErrDescriptionTooLong", jsonArgs(t, map[string]any{"title": "t", "description": strings.Repeat("d", store.MaxDescriptionLen+1)}), store.CodeInvalid, "description"},
		{"ErrDescriptionType", `{"title":"t","description":["a"]}`, store.CodeInvalid, "description"},
		{"ErrNotObject", `["Buy milk"]`, store.CodeBadRequest, ""},
		{"ErrNotJSON", `{"title":`, store.CodeBadRequest, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.run(t, e.a, "add_task", tc.args)
			wantErr(t, err, tc.code, tc.field)
		})
	}
	t.Run("ErrTitleTooLongMessage", func(t *testing.T) {
		_, err := e.run(t, e.a, "add_task", jsonArgs(t, map[string]any{"title": strings.Repeat("a", 501)}))
		if got := store.ErrorMessage(err); got != "title must be at most 500 characters, got 501" {
			t.Fatalf("got message %q", got)
		}
	})
	t.Run("ErrNoUser", func(t *testing.T) {
		_, err := e.run(t, "", "add_task", `{"title":"x","user_id":"`+e.a+`"}`)
		wantErr(t, err, store.CodeUnauthorized, "")
	})
	t.Run("UserIDArgumentIgnored", func(t *testing.T) {
		c := e.must(t, e.b, "add_task", `{"title":"mine","user_id":"`+e.a+`"}`).Data.(Change)
		if _, err := e.db.GetTodo(context.Background(), e.b, c.TaskID); err != nil {
			t.Fatalf("the task is not the caller's: %v", err)
		}
		if _, err := e.db.GetTodo(context.Background(), e.a, c.TaskID); store.ErrorCode(err) != store.CodeNotFound {
			t.Fatalf("the task went to the user_id argument: %v", err)
		}
	})
}

func testListTasks(t *testing.T, e *toolEnv) {
	list := func(t *testing.T, user, args string) TaskList {
		t.Helper()
		return e.must(t, user, "list_tasks", args).Data.(TaskList)
	}
	if l := list(t, e.a, `{}`); l.Total != 0 || l.Tasks == nil || len(l.Tasks) != 0 {
		t.Fatalf("empty list: got %+v (tasks must be [], not null)", l)
	}
	first, second, third := e.add(t, e.a, "first"), e.add(t, e.a, "second"), e.add(t, e.a, "third")
	e.must(t, e.a, "complete_task", `{"task_id":"`+second.ID+`"}`)
	ids := func(l TaskList) []string {
		var ids []string
		for _, task := range l.Tasks {
			ids = append(ids, task.ID)
		}
		return ids
	}
	for _, tc := range []struct {
		name, args string
		want       []string
		total      int
	}{
		{"All", `{}`, []string{third.ID, second.ID, first.ID}, 3},
		{"AllNamed", `{"status":"all"}`, []string{third.ID, second.ID, first.ID}, 3},
		{"NullArgs", `null`, []string{third.ID, second.ID, first.ID}, 3},
		{"Pending", `{"status":"pending"}`, []string{third.ID, first.ID}, 2},
		{"Completed", `{"status":"completed"}`, []string{second.ID}, 1},
		{"Limit", `{"limit":1}`, []string{third.ID}, 3},
		{"LimitMax", `{"limit":1000}`, []string{third.ID, second.ID, first.ID}, 3},
		{"UserIDIgnored", `{"user_id":"` + e.b + `"}`, []string{third.ID, second.ID, first.ID}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := list(t, e.a, tc.args)
			if got := ids(l); !slices.Equal(got, tc.want) || l.Total != tc.total {
				t.Fatalf("got %v total %d, want %v total %d", got, l.Total, tc.want, tc.total)
			}
		})
	}
	t.Run("Fields", func(t *testing.T) {
		data, err := json.Marshal(list(t, e.a, `{"status":"completed"}`))
		if err != nil {
			t.Fatal(err)
		}
		want := `{"tasks":[{"id":"` + second.ID + `","title":"second","description":null,"completed":true}],"total":1}`
		if string(data) != want {
			t.Fatalf("got %s, want %s", data, want)
		}
	})
	t.Run("Summary", func(t *testing.T) {
		if got := e.must(t, e.a, "list_tasks", `{"status":"pending"}`).Text; got != "2 pending tasks." {
			t.Errorf("got %q", got)
		}
		if got := e.must(t, e.a, "list_tasks", `{"limit":1}`).Text; got != "Showing the newest 1 of 3 tasks." {
			t.Errorf("got %q", got)
		}
	})
	for _, tc := range []struct {
		name, args, code, field string
	}{
		{"ErrStatus", `{"status":"done"}`, store.CodeInvalid, "status"},
		{"ErrStatusType", `{"status":true}`, store.CodeInvalid, "status"},
		{"ErrLimitZero", `{"limit":0}`, store.CodeInvalid, "limit"},
		{"ErrLimitTooBig", `{"limit":1001}`, store.CodeInvalid, "limit"},
		{"ErrLimitFraction", `{"limit":2.5}`, store.CodeInvalid, "limit"},
		{"ErrLimitType", `{"limit":"ten"}`, store.CodeInvalid, "limit"},
		{"ErrNotObject", `"all"`, store.CodeBadRequest, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.run(t, e.a, "list_tasks", tc.args)
			wantErr(t, err, tc.code, tc.field)
		})
	}
}

func testCompleteTask(t *testing.T, e *toolEnv) {
	task := e.add(t, e.a, "Walk the dog")
	r := e.must(t, e.a, "complete_task", `{"task_id":"`+task.ID+`"}`)
	if c := r.Data.(Change); c.Status != StatusCompleted || !c.Task.Completed || c.TaskID != task.ID || c.Title != "Walk the dog" {
		t.Fatalf("complete: got %+v", c)
	}
	r = e.must(t, e.a, "complete_task", `{"task_id":"`+task.ID+`","completed":false}`)
	if c := r.Data.(Change); c.Status != StatusReopened || c.Task.Completed {
		t.Fatalf("reopen: got %+v", c)
	}
	r = e.must(t, e.a, "complete_task", `{"task_id":"`+strings.ToUpper(task.ID)+`","completed":true}`)
	if c := r.Data.(Change); c.Status != StatusCompleted || !c.Task.Completed || c.TaskID != task.ID {
		t.Fatalf("complete by upper-case id: got %+v", c)
	}
	want := []string{store.EventTodoCreated, store.EventTodoUpdated, store.EventTodoUpdated, store.EventTodoUpdated}
	if got := e.events(t, e.a); !slices.Equal(got, want) {
		t.Fatalf("got events %v, want %v", got, want)
	}
	t.Run("ErrCompletedType", func(t *testing.T) {
		_, err := e.run(t, e.a, "complete_task", `{"task_id":"`+task.ID+`","completed":"yes"}`)
		wantErr(t, err, store.CodeInvalid, "completed")
	})
}

func testUpdateTask(t *testing.T, e *toolEnv) {
	task := e.add(t, e.a, "Call mum")
	r := e.must(t, e.a, "update_task", `{"task_id":"`+task.ID+`","title":"Call mom"}`)
	if c := r.Data.(Change); c.Status != StatusUpdated || c.Title != "Call mom" || c.Task.Description != nil {
		t.Fatalf("title: got %+v", c)
	}
	r = e.must(t, e.a, "update_task", `{"task_id":"`+task.ID+`","description":"about Sunday"}`)
	if c := r.Data.(Change); c.Title != "Call mom" || c.Task.Description == nil || *c.Task.Description != "about Sunday" {
		t.Fatalf("description: got %+v", c)
	}
	for _, tc := range []struct {
		name, args, code, field string
	}{
		{"ErrNothingToChange", `{"task_id":"` + task.ID + `"}`, store.CodeInvalid, ""},
		{"ErrTitleBlank", `{"task_id":"` + task.ID + `","title":""}`, store.CodeInvalid, "title"},
		{"ErrTitleTooLong", `{"task_id":"` + task.ID + `","title":"` + strings.Repeat("a", 501) + `"}`, store.CodeInvalid, "title"},
		{"ErrDescriptionTooLong", `{"task_id":"` + task.ID + `","description":"` + strings.Repeat("a", 2001) + `"}`, store.CodeInvalid, "description"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.run(t, e.a, "update_task", tc.args)
			wantErr(t, err, tc.code, tc.field)
		})
	}
	if got, _ := e.db.GetTodo(context.Background(), e.a, task.ID); got.Title != "Call mom" {
		t.Fatalf("a refused update changed the task: %+v", got)
	}
}

func testDeleteTask(t *testing.T, e *toolEnv) {
	task := e.add(t, e.a, "Old task")
	r := e.must(t, e.a, "delete_task", `{"task_id":"`+task.ID+`"}`)
	if c := r.Data.(Change); c.Status != StatusDeleted || c.TaskID != task.ID || c.Title != "Old task" {
		t.Fatalf("got %+v", c)
	}
	_, err := e.run(t, e.a, "delete_task", `{"task_id":"`+task.ID+`"}`)
	wantErr(t, err, store.CodeNotFound, "task_id")
	if got := e.events(t, e.a); !slices.Equal(got, []string{store.EventTodoCreated, store.EventTodoDeleted}) {
		t.Fatalf("got events %v", got)
	}
}

// testTaskIDErrors runs every tool that takes a task_id with bad ones.
func testTaskIDErrors(t *testing.T, e *toolEnv) {
	theirs := e.add(t, e.b, "B's task")
	for _, tool := range []string{"complete_task", "delete_task", "update_task"} {
		t.Run(tool, func(t *testing.T) {
			for _, tc := range []struct {
				name, args, code, field string
			}{
				{"ErrMissing", `{"title":"x"}`, store.CodeInvalid, "task_id"},
				{"ErrNotUUID", `{"task_id":"42","title":"x"}`, store.CodeInvalid, "task_id"},
				{"ErrInteger", `{"task_id":42,"title":"x"}`, store.CodeInvalid, "task_id"},
				{"ErrNotFound", `{"task_id":"` + uuid.NewString() + `","title":"x"}`, store.CodeNotFound, "task_id"},
				{"ErrOtherUsersTask", `{"task_id":"` + theirs.ID + `","title":"x"}`, store.CodeNotFound, "task_id"},
				{"ErrOtherUsersTaskWithUserID", `{"task_id":"` + theirs.ID + `","user_id":"` + e.b + `","title":"x"}`, store.CodeNotFound, "task_id"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					_, err := e.run(t, e.a, tool, tc.args)
					wantErr(t, err, tc.code, tc.field)
				})
			}
			// Another user's task and a missing one read the same.
			_, missing := e.run(t, e.a, tool, `{"task_id":"`+uuid.NewString()+`","title":"x"}`)
			_, others := e.run(t, e.a, tool, `{"task_id":"`+theirs.ID+`","title":"x"}`)
			if missing.Error() != others.Error() || store.ErrorMessage(others) != "task not found" {
				t.Fatalf("missing: %v; another user's: %v", missing, others)
			}
		})
	}
	got, err := e.db.GetTodo(context.Background(), e.b, theirs.ID)
	if err != nil || got.Title != "B's task" || got.IsComplete {
		t.Fatalf("B's task was touched: %+v, %v", got, err)
	}
	if evs := e.events(t, e.a); len(evs) != 0 {
		t.Fatalf("A got events %v from refused calls", evs)
	}
}

func testIsolation(t *testing.T, e *toolEnv) {
	e.add(t, e.a, "A1")
	e.add(t, e.a, "A2")
	mine := e.add(t, e.b, "B1")
	l := e.must(t, e.b, "list_tasks", `{}`).Data.(TaskList)
	if l.Total != 1 || len(l.Tasks) != 1 || l.Tasks[0].ID != mine.ID {
		t.Fatalf("B sees %+v", l)
	}
	if got := e.events(t, e.b); !slices.Equal(got, []string{store.EventTodoCreated}) {
		t.Fatalf("B's events %v", got)
	}
}
