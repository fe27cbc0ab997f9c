package store_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/evotodo/evo/store"
	"github.com/evotodo/evo/store/storetest"
)

// recorder is a store.Publisher that keeps what it was given.
type recorder struct {
	mu  sync.Mutex
	evs []store.Event
}

func (r *recorder) PublishEvent(_ context.Context, _ string, ev store.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, ev)
}

func ptr[T any](v T) *T { return &v }

// TestConformance runs the same suite against every store.
func TestConformance(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			db := b.Open(t)
			t.Run("Users", func(t *testing.T) { testUsers(t, db) })
			t.Run("TodoLifecycle", func(t *testing.T) { testTodoLifecycle(t, db) })
			t.Run("Isolation", func(t *testing.T) { testIsolation(t, db) })
			t.Run("ListFilterAndPaging", func(t *testing.T) { testList(t, db) })
			t.Run("ConcurrentSeq", func(t *testing.T) { testConcurrentSeq(t, db) })
			t.Run("Prune", func(t *testing.T) { testPrune(t, db) })
			t.Run("Validation", func(t *testing.T) { testValidation(t, db) })
			t.Run("Chat", func(t *testing.T) { testChat(t, db) })
			t.Run("MissingUser", func(t *testing.T) { testMissingUser(t, db) })
		})
	}
}

func testUsers(t *testing.T, db store.DB) {
	ctx := context.Background()
	u := storetest.User(t, db)
	if len(u.ID) != 32 {
		t.Errorf("user id %q: got length %d, want 32", u.ID, len(u.ID))
	}
	again, err := db.EnsureUser(ctx, u.Email, "other name")
	if err != nil || again.ID != u.ID {
		t.Fatalf("EnsureUser again: got %v, %v; want id %s", again.ID, err, u.ID)
	}
	got, err := db.GetUser(ctx, u.ID)
	if err != nil || got.Email != u.Email {
		t.Fatalf("GetUser: got %+v, %v", got, err)
	}
	if _, err := db.GetUser(ctx, "nobody"); store.ErrorCode(err) != store.CodeNotFound {
		t.Fatalf("GetUser(nobody): got %v, want not_found", err)
	}
	u2 := storetest.User(t, db)
	for _, tt := range []struct {
		ids, want []string
	}{
		{[]string{u.ID}, []string{u.ID}},
		{[]string{"nobody"}, nil},
		{[]string{"", u2.ID, "nobody", u.ID}, []string{u.ID, u2.ID}},
		{nil, nil},
	} {
		found, err := db.ExistingUsers(ctx, tt.ids)
		slices.Sort(found)
		want := slices.Sorted(slices.Values(tt.want))
		if err != nil || !slices.Equal(found, want) {
			t.Errorf("ExistingUsers(%q): got %q, %v; want %q", tt.ids, found, err, want)
		}
	}
}

func testTodoLifecycle(t *testing.T, db store.DB) {
	ctx := context.Background()
	rec := &recorder{}
	svc := store.NewTodos(db, rec)
	u := storetest.User(t, db)

	created, err := svc.Create(ctx, u.ID, store.TodoCreate{Title: "Buy groceries", Description: ptr("Milk, eggs")})
	if err != nil {
		t.Fatal(err)
	}
	if created.UserID != u.ID || created.Title != "Buy groceries" || *created.Description != "Milk, eggs" || created.IsComplete {
		t.Fatalf("created: got %+v", created)
	}
	if created.CreatedAt.Location() != time.UTC || time.Since(created.CreatedAt) > time.Minute {
		t.Errorf("created_at: got %v, want now in UTC", created.CreatedAt)
	}
	got, err := svc.Get(ctx, u.ID, strings.ToUpper(created.ID))
	if err != nil || got.ID != created.ID || !got.CreatedAt.Equal(created.CreatedAt) {
		t.Fatalf("Get (upper-case id): got %+v, %v; want %+v", got, err, created)
	}

	updated, err := svc.Update(ctx, u.ID, created.ID, store.TodoUpdate{IsComplete: ptr(true)})
	if err != nil {
		t.Fatal(err)
	}
	if !updated.IsComplete || updated.Title != "Buy groceries" || *updated.Description != "Milk, eggs" {
		t.Fatalf("update kept fields: got %+v", updated)
	}
	updated, err = svc.Update(ctx, u.ID, created.ID, store.TodoUpdate{Title: ptr("Buy oat milk")})
	if err != nil || updated.Title != "Buy oat milk" || !updated.IsComplete {
		t.Fatalf("update title: got %+v, %v", updated, err)
	}

	deleted, err := svc.Delete(ctx, u.ID, created.ID)
	if err != nil || deleted.ID != created.ID {
		t.Fatalf("Delete: got %+v, %v", deleted, err)
	}
	if _, err := svc.Get(ctx, u.ID, created.ID); store.ErrorCode(err) != store.CodeNotFound {
		t.Fatalf("Get after delete: got %v, want not_found", err)
	}
	if _, err := svc.Delete(ctx, u.ID, created.ID); store.ErrorCode(err) != store.CodeNotFound {
		t.Fatalf("Delete twice: got %v, want not_found", err)
	}

	// Every change has its event, in order, in the log and at the publisher.
	wantTypes := []string{store.EventTodoCreated, store.EventTodoUpdated, store.EventTodoUpdated, store.EventTodoDeleted}
	evs, err := db.EventsSince(ctx, u.ID, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != len(wantTypes) || len(rec.evs) != len(wantTypes) {
		t.Fatalf("events: got %d logged, %d published; want %d", len(evs), len(rec.evs), len(wantTypes))
	}
	for i, ev := range evs {
		if ev.Seq != int64(i+1) || ev.Type != wantTypes[i] || ev.Todo.ID != created.ID {
			t.Errorf("event %d: got seq %d type %s todo %s", i, ev.Seq, ev.Type, ev.Todo.ID)
		}
		if rec.evs[i].Seq != ev.Seq || rec.evs[i].Type != ev.Type {
			t.Errorf("published %d: got %d %s, logged %d %s", i, rec.evs[i].Seq, rec.evs[i].Type, ev.Seq, ev.Type)
		}
	}
	if evs[3].Todo.Title != "Buy oat milk" {
		t.Errorf("delete event carries the todo as it was: got %+v", evs[3].Todo)
	}
	if last, err := db.LastSeq(ctx, u.ID); err != nil || last != 4 {
		t.Errorf("LastSeq: got %d, %v; want 4", last, err)
	}
	if last, err := db.LastSeqs(ctx, []string{u.ID, "no-such-user"}); err != nil || len(last) != 1 || last[u.ID] != 4 {
		t.Errorf("LastSeqs: got %v, %v; want only %s: 4", last, err, u.ID)
	}
	if evs, _ := db.EventsSince(ctx, u.ID, 2, 1); len(evs) != 1 || evs[0].Seq != 3 {
		t.Errorf("EventsSince(2, limit 1): got %+v", evs)
	}
}

func testIsolation(t *testing.T, db store.DB) {
	ctx := context.Background()
	svc := store.NewTodos(db, nil)
	a, b := storetest.User(t, db), storetest.User(t, db)
	todo, err := svc.Create(ctx, a.ID, store.TodoCreate{Title: "A's secret"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Get(ctx, b.ID, todo.ID); store.ErrorCode(err) != store.CodeNotFound {
		t.Errorf("B gets A's todo: got %v, want not_found", err)
	}
	if _, err := svc.Update(ctx, b.ID, todo.ID, store.TodoUpdate{Title: ptr("pwned")}); store.ErrorCode(err) != store.CodeNotFound {
		t.Errorf("B updates A's todo: got %v, want not_found", err)
	}
	if _, err := svc.Delete(ctx, b.ID, todo.ID); store.ErrorCode(err) != store.CodeNotFound {
		t.Errorf("B deletes A's todo: got %v, want not_found", err)
	}
	list, total, err := svc.List(ctx, b.ID, store.TodoFilter{})
	if err != nil || len(list) != 0 || total != 0 {
		t.Errorf("B's list: got %d todos, total %d, %v", len(list), total, err)
	}
	if evs, _ := db.EventsSince(ctx, b.ID, 0, 100); len(evs) != 0 {
		t.Errorf("B's events: got %d, want 0", len(evs))
	}
	if got, _ := svc.Get(ctx, a.ID, todo.ID); got.Title != "A's secret" {
		t.Errorf("A's todo changed: %+v", got)
	}
}

func testList(t *testing.T, db store.DB) {
	ctx := context.Background()
	svc := store.NewTodos(db, nil)
	u := storetest.User(t, db)
	var ids []string
	for i := range 5 {
		td, err := svc.Create(ctx, u.ID, store.TodoCreate{Title: "todo " + string(rune('a'+i))})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, td.ID)
		if i%2 == 0 {
			if _, err := svc.Update(ctx, u.ID, td.ID, store.TodoUpdate{IsComplete: ptr(true)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name      string
		f         store.TodoFilter
		wantLen   int
		wantTotal int
		wantFirst string
	}{
		{"All", store.TodoFilter{}, 5, 5, ids[4]},
		{"Complete", store.TodoFilter{IsComplete: ptr(true)}, 3, 3, ids[4]},
		{"Pending", store.TodoFilter{IsComplete: ptr(false)}, 2, 2, ids[3]},
		{"Skip", store.TodoFilter{Skip: 1, Limit: 2}, 2, 5, ids[3]},
		{"SkipPastEnd", store.TodoFilter{Skip: 10}, 0, 5, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, total, err := svc.List(ctx, u.ID, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tt.wantLen || total != tt.wantTotal {
				t.Fatalf("got %d todos, total %d; want %d, %d", len(got), total, tt.wantLen, tt.wantTotal)
			}
			if tt.wantFirst != "" && got[0].ID != tt.wantFirst {
				t.Errorf("first: got %s, want %s (newest first)", got[0].ID, tt.wantFirst)
			}
		})
	}
}

// testConcurrentSeq makes many concurrent changes of one user and checks
// that seq allocation is serialized: no error, no gap, no duplicate.
func testConcurrentSeq(t *testing.T, db store.DB) {
	ctx := context.Background()
	svc := store.NewTodos(db, nil)
	u := storetest.User(t, db)
	const workers, each = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for range workers {
		wg.Go(func() {
			for range each {
				if _, err := svc.Create(ctx, u.ID, store.TodoCreate{Title: "concurrent"}); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent create: %v", err)
	}
	evs, err := db.EventsSince(ctx, u.ID, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != workers*each {
		t.Fatalf("events: got %d, want %d", len(evs), workers*each)
	}
	for i, ev := range evs {
		if ev.Seq != int64(i+1) {
			t.Fatalf("event %d: got seq %d, want %d", i, ev.Seq, i+1)
		}
	}
}

func testPrune(t *testing.T, db store.DB) {
	ctx := context.Background()
	svc := store.NewTodos(db, nil)
	u := storetest.User(t, db)
	for range 10 {
		if _, err := svc.Create(ctx, u.ID, store.TodoCreate{Title: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.PruneEvents(ctx, 4, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	evs, _ := db.EventsSince(ctx, u.ID, 0, 100)
	if len(evs) != 4 || evs[0].Seq != 7 {
		t.Fatalf("after keeping 4: got %d events from seq %v", len(evs), evs)
	}
	// Age prunes everything but the newest.
	if _, err := db.PruneEvents(ctx, 1000, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	evs, _ = db.EventsSince(ctx, u.ID, 0, 100)
	if len(evs) != 1 || evs[0].Seq != 10 {
		t.Fatalf("after age prune: got %+v, want only seq 10", evs)
	}
	if last, _ := db.LastSeq(ctx, u.ID); last != 10 {
		t.Errorf("LastSeq after prune: got %d, want 10", last)
	}
}

func testValidation(t *testing.T, db store.DB) {
	ctx := context.Background()
	svc := store.NewTodos(db, nil)
	u := storetest.User(t, db)
	tests := []struct {
		name      string
		in        store.TodoCreate
		wantField string
	}{
		{"TitleEmpty", store.TodoCreate{Title: ""}, "title"},
		{"TitleWhitespace", store.TodoCreate{Title: " \t\n"}, "title"},
		{"Title501", store.TodoCreate{Title: strings.Repeat("é", 501)}, "title"},
		{"Description2001", store.TodoCreate{Title: "ok", Description: ptr(strings.Repeat("d", 2001))}, "description"},
		{"Title500", store.TodoCreate{Title: strings.Repeat("é", 500), Description: ptr(strings.Repeat("d", 2000))}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := svc.Create(ctx, u.ID, tt.in)
			if tt.wantField == "" {
				if err != nil || got.Title != tt.in.Title {
					t.Fatalf("got %v, want stored as is", err)
				}
				return
			}
			if store.ErrorCode(err) != store.CodeInvalid || store.ErrorField(err) != tt.wantField {
				t.Fatalf("got %v, want invalid %s", err, tt.wantField)
			}
		})
	}
	if _, err := svc.Get(ctx, u.ID, "not-a-uuid"); store.ErrorCode(err) != store.CodeInvalid {
		t.Errorf("bad id: got %v, want invalid", err)
	}
	if _, err := svc.Update(ctx, u.ID, store.NewID(), store.TodoUpdate{}); store.ErrorCode(err) != store.CodeInvalid {
		t.Errorf("empty update: got %v, want invalid", err)
	}
	if evs, _ := db.EventsSince(ctx, u.ID, 0, 100); len(evs) != 1 {
		t.Errorf("rejected input wrote events: got %d events, want 1", len(evs))
	}
}

func testChat(t *testing.T, db store.DB) {
	ctx := context.Background()
	u, other := storetest.User(t, db), storetest.User(t, db)
	var stored []store.ChatMessage
	for i := range 3 {
		m, err := db.CreateChatMessage(ctx, store.ChatMessage{UserID: u.ID, Message: "hi " + string(rune('0'+i)), Response: "hello"})
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, m)
		time.Sleep(2 * time.Millisecond)
	}
	got, err := db.ListChatMessages(ctx, u.ID, time.Time{}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != stored[2].ID || string(got[0].ToolCalls) != "[]" || got[0].Status != "completed" {
		t.Fatalf("newest page: got %+v", got)
	}
	older, _ := db.ListChatMessages(ctx, u.ID, got[1].CreatedAt, 10)
	if len(older) != 1 || older[0].ID != stored[0].ID {
		t.Fatalf("older page: got %+v", older)
	}
	if ms, _ := db.ListChatMessages(ctx, other.ID, time.Time{}, 10); len(ms) != 0 {
		t.Errorf("other user's history: got %d messages", len(ms))
	}
}

// testMissingUser: a create or a chat message for a user that does not exist (deleted
// after its token was checked) is ErrUserNotFound, writes nothing and allocates no seq.
func testMissingUser(t *testing.T, db store.DB) {
	ctx := context.Background()
	_, err := store.NewTodos(db, nil).Create(ctx, "no-such-user", store.TodoCreate{Title: "orphan"})
	if !errors.Is(err, store.ErrUserNotFound) || store.ErrorCode(err) != store.CodeNotFound {
		t.Fatalf("create for a missing user: %v, want ErrUserNotFound", err)
	}
	if n, err := db.LastSeq(ctx, "no-such-user"); err != nil || n != 0 {
		t.Fatalf("seq after the failed create: %d, %v", n, err)
	}
	_, err = db.CreateChatMessage(ctx, store.ChatMessage{UserID: "no-such-user", Message: "hi", Response: "hello", ToolCalls: []byte("[]"), Status: "completed"})
	if !errors.Is(err, store.ErrUserNotFound) {
		t.Fatalf("chat message for a missing user: %v, want ErrUserNotFound", err)
	}
	if ms, err := db.ListChatMessages(ctx, "no-such-user", time.Time{}, 10); err != nil || len(ms) != 0 {
		t.Fatalf("history of the missing user: %d messages, %v", len(ms), err)
	}
}
