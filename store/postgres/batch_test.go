package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/evotodo/evo/store"
	"github.com/evotodo/evo/store/postgres"
	"github.com/evotodo/evo/store/storetest"
)

// waitFor polls cond for up to 20 s (generous: the machine may be loaded).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

type changeResult struct {
	ev  store.Event
	err error
}

// async runs change in a goroutine and returns its result channel.
func async(change func() (store.Event, error)) chan changeResult {
	ch := make(chan changeResult, 1)
	go func() {
		ev, err := change()
		ch <- changeResult{ev, err}
	}()
	return ch
}

// holdBatches makes db send one batch at a time and keeps that one in flight: a change
// of a blocker user whose seq row another transaction holds locked. Changes made until
// release is called queue up for the next batch, in the order they were submitted (each
// call of queue waits for its change to be queued). release lets the blocker commit.
func holdBatches(t *testing.T, db *postgres.DB) (queue func(func() (store.Event, error)) chan changeResult, release func()) {
	t.Helper()
	ctx := context.Background()
	postgres.SetMaxFlushes(db, 1)
	blocker := storetest.User(t, db)
	if _, err := db.CreateTodo(ctx, blocker.ID, store.TodoCreate{Title: "blocker"}); err != nil {
		t.Fatal(err)
	}
	tx, err := db.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(ctx) })
	if _, err := tx.Exec(ctx, `SELECT FROM user_seqs WHERE user_id = $1 FOR UPDATE`, blocker.ID); err != nil {
		t.Fatal(err)
	}
	before, _, _ := postgres.BatchStats(db)
	held := async(func() (store.Event, error) {
		return db.CreateTodo(ctx, blocker.ID, store.TodoCreate{Title: "held"})
	})
	waitFor(t, "the blocker's batch to be in flight", func() bool {
		b, _, _ := postgres.BatchStats(db)
		return b == before+1 && postgres.Queued(db) == 0
	})
	queue = func(change func() (store.Event, error)) chan changeResult {
		n := postgres.Queued(db)
		ch := async(change)
		waitFor(t, "a change to be queued", func() bool { return postgres.Queued(db) == n+1 })
		return ch
	}
	release = func() {
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if r := <-held; r.err != nil {
			t.Fatalf("blocker's change: %v", r.err)
		}
	}
	return queue, release
}

func get(t *testing.T, ch chan changeResult) changeResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("a change never returned")
	}
	return changeResult{}
}

// TestGroupCommitManyUsers: changes of many users made concurrently are written in
// fewer batches than changes, every one succeeds, and each user's events carry seq 1..n
// without a gap, in the order of that user's own (sequential) changes, with no batch
// having to be run again one by one (no deadlock between batches).
func TestGroupCommitManyUsers(t *testing.T) {
	ctx := context.Background()
	db := storetest.Postgres(t)
	const users, each = 48, 12
	ids := make([]string, users)
	for i := range ids {
		ids[i] = storetest.User(t, db).ID
	}
	b0, c0, f0 := postgres.BatchStats(db)
	var wg sync.WaitGroup
	errs := make(chan error, users*each)
	for _, u := range ids {
		// Four writers per user: one creating, one updating the user's first todo, two
		// the second one, so that batches hold several changes of one user touching
		// the same rows, and batches in flight together touch them too.
		first, err := db.CreateTodo(ctx, u, store.TodoCreate{Title: "first"})
		if err != nil {
			t.Fatal(err)
		}
		second, err := db.CreateTodo(ctx, u, store.TodoCreate{Title: "second"})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for i := range each {
				if _, err := db.CreateTodo(ctx, u, store.TodoCreate{Title: fmt.Sprintf("todo %d", i)}); err != nil {
					errs <- err
				}
			}
		})
		wg.Go(func() {
			for i := range each {
				title := fmt.Sprintf("first, edit %d", i)
				if _, err := db.UpdateTodo(ctx, u, first.Todo.ID, store.TodoUpdate{Title: &title}); err != nil {
					errs <- err
				}
			}
		})
		// Two more writers toggling the user's second todo.
		for range 2 {
			wg.Go(func() {
				for i := range each {
					done := i%2 == 0
					if _, err := db.UpdateTodo(ctx, u, second.Todo.ID, store.TodoUpdate{IsComplete: &done}); err != nil {
						errs <- err
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent change: %v", err)
	}
	b1, c1, f1 := postgres.BatchStats(db)
	t.Logf("%d changes in %d batches", c1-c0, b1-b0)
	if c1-c0 != users*(2+each*4) {
		t.Fatalf("batched changes: got %d, want %d", c1-c0, users*(2+each*4))
	}
	if b1-b0 >= c1-c0 {
		t.Errorf("%d changes took %d batches: no group commit", c1-c0, b1-b0)
	}
	if f1 != f0 {
		t.Errorf("%d batches failed and were run one by one (a deadlock?)", f1-f0)
	}
	for _, u := range ids {
		evs, err := db.EventsSince(ctx, u, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 2+4*each {
			t.Fatalf("user %s: %d events, want %d", u, len(evs), 2+4*each)
		}
		created, edited := 0, 0
		for i, ev := range evs {
			if ev.Seq != int64(i+1) {
				t.Fatalf("user %s: event %d has seq %d", u, i, ev.Seq)
			}
			switch {
			case i < 2 || ev.Todo.Title == "second":
			case ev.Type == store.EventTodoCreated:
				if want := fmt.Sprintf("todo %d", created); ev.Todo.Title != want {
					t.Fatalf("user %s seq %d: created %q, want %q (out of order)", u, ev.Seq, ev.Todo.Title, want)
				}
				created++
			default:
				if want := fmt.Sprintf("first, edit %d", edited); ev.Todo.Title != want {
					t.Fatalf("user %s seq %d: edited to %q, want %q (out of order)", u, ev.Seq, ev.Todo.Title, want)
				}
				edited++
			}
		}
		if last, err := db.LastSeq(ctx, u); err != nil || last != int64(2+4*each) {
			t.Fatalf("user %s: last seq %d, %v", u, last, err)
		}
	}
}

// TestGroupCommitBadMember: one batch holding a change of a missing todo (not found) and
// a create for a user that does not exist (a foreign key violation, which aborts the
// batch's transaction) next to good changes: only the bad ones fail, each with its own
// error, and the good ones commit with consecutive seqs.
func TestGroupCommitBadMember(t *testing.T) {
	ctx := context.Background()
	db := storetest.Postgres(t)
	a, b := storetest.User(t, db), storetest.User(t, db)
	missing := store.NewID()
	queue, release := holdBatches(t, db)
	_, c0, _ := postgres.BatchStats(db)
	goodA := queue(func() (store.Event, error) { return db.CreateTodo(ctx, a.ID, store.TodoCreate{Title: "a"}) })
	notFound := queue(func() (store.Event, error) { return db.DeleteTodo(ctx, a.ID, missing) })
	goodB := queue(func() (store.Event, error) { return db.CreateTodo(ctx, b.ID, store.TodoCreate{Title: "b"}) })
	release()
	for name, ch := range map[string]chan changeResult{"a": goodA, "b": goodB} {
		if r := get(t, ch); r.err != nil || r.ev.Seq != 1 || r.ev.Todo.Title != name {
			t.Fatalf("good change %s next to a not-found one: %+v, %v", name, r.ev, r.err)
		}
	}
	if r := get(t, notFound); store.ErrorCode(r.err) != store.CodeNotFound {
		t.Fatalf("delete of a missing todo: %v, want not_found", r.err)
	}
	if _, c1, _ := postgres.BatchStats(db); c1-c0 != 3 { // one batch
		t.Fatalf("%d changes flushed, want 3", c1-c0)
	}

	// A foreign key violation aborts the batch: its members run again one by one.
	queue, release = holdBatches(t, db)
	_, _, f0 := postgres.BatchStats(db)
	goodA = queue(func() (store.Event, error) { return db.CreateTodo(ctx, a.ID, store.TodoCreate{Title: "a2"}) })
	noUser := queue(func() (store.Event, error) {
		return db.CreateTodo(ctx, "no-such-user", store.TodoCreate{Title: "orphan"})
	})
	goodB = queue(func() (store.Event, error) { return db.CreateTodo(ctx, b.ID, store.TodoCreate{Title: "b2"}) })
	release()
	for name, ch := range map[string]chan changeResult{"a2": goodA, "b2": goodB} {
		if r := get(t, ch); r.err != nil || r.ev.Seq != 2 || r.ev.Todo.Title != name {
			t.Fatalf("good change %s next to a failing one: %+v, %v", name, r.ev, r.err)
		}
	}
	if r := get(t, noUser); !errors.Is(r.err, store.ErrUserNotFound) {
		t.Fatalf("create for a missing user: %v, want ErrUserNotFound", r.err)
	}
	if _, _, f1 := postgres.BatchStats(db); f1 != f0+1 {
		t.Fatalf("batches run one by one: %d, want 1", f1-f0)
	}
	if n, err := db.LastSeq(ctx, "no-such-user"); err != nil || n != 0 {
		t.Fatalf("the failed create left seq %d, %v", n, err)
	}
}

// TestGroupCommitSameUserOrder: several changes of one user in one batch (an update, a
// create, a delete, an update of the deleted todo) get consecutive seqs in the order they
// were made, and each sees the ones before it.
func TestGroupCommitSameUserOrder(t *testing.T) {
	ctx := context.Background()
	db := storetest.Postgres(t)
	u := storetest.User(t, db)
	t1, err := db.CreateTodo(ctx, u.ID, store.TodoCreate{Title: "one"})
	if err != nil {
		t.Fatal(err)
	}
	t2, err := db.CreateTodo(ctx, u.ID, store.TodoCreate{Title: "two"})
	if err != nil {
		t.Fatal(err)
	}
	queue, release := holdBatches(t, db)
	title := "one, edited"
	r1 := queue(func() (store.Event, error) {
		return db.UpdateTodo(ctx, u.ID, t1.Todo.ID, store.TodoUpdate{Title: &title})
	})
	r2 := queue(func() (store.Event, error) { return db.CreateTodo(ctx, u.ID, store.TodoCreate{Title: "three"}) })
	r3 := queue(func() (store.Event, error) { return db.DeleteTodo(ctx, u.ID, t2.Todo.ID) })
	done := true
	r4 := queue(func() (store.Event, error) {
		return db.UpdateTodo(ctx, u.ID, t2.Todo.ID, store.TodoUpdate{IsComplete: &done})
	})
	r5 := queue(func() (store.Event, error) { return db.DeleteTodo(ctx, u.ID, t1.Todo.ID) })
	_, _, f0 := postgres.BatchStats(db)
	release()
	want := []struct {
		ch    chan changeResult
		typ   string
		title string
		seq   int64
	}{
		{r1, store.EventTodoUpdated, "one, edited", 3},
		{r2, store.EventTodoCreated, "three", 4},
		{r3, store.EventTodoDeleted, "two", 5},
		{r5, store.EventTodoDeleted, "one, edited", 6},
	}
	for _, w := range want {
		r := get(t, w.ch)
		if r.err != nil || r.ev.Type != w.typ || r.ev.Todo.Title != w.title || r.ev.Seq != w.seq {
			t.Fatalf("got %s %q seq %d (%v), want %s %q seq %d", r.ev.Type, r.ev.Todo.Title, r.ev.Seq, r.err, w.typ, w.title, w.seq)
		}
	}
	if r := get(t, r4); store.ErrorCode(r.err) != store.CodeNotFound {
		t.Fatalf("update of the todo deleted just before in the same batch: %v, want not_found", r.err)
	}
	if _, _, f1 := postgres.BatchStats(db); f1 != f0 {
		t.Fatal("the batch failed and was run one by one")
	}
	evs, err := db.EventsSince(ctx, u.ID, 2, 100)
	if err != nil || len(evs) != 4 {
		t.Fatalf("events after seq 2: %d, %v", len(evs), err)
	}
}

// TestGroupCommitCancel: a caller whose context is cancelled while its change waits for
// a batch gets the context's error at once and its change is not written; a caller that
// gives up while its batch is in flight returns at once too, and neither fails the
// changes batched with them.
func TestGroupCommitCancel(t *testing.T) {
	ctx := context.Background()
	db := storetest.Postgres(t)
	a, b := storetest.User(t, db), storetest.User(t, db)
	queue, release := holdBatches(t, db)
	cctx, cancel := context.WithCancel(ctx)
	goodA := queue(func() (store.Event, error) { return db.CreateTodo(ctx, a.ID, store.TodoCreate{Title: "a"}) })
	gone := queue(func() (store.Event, error) { return db.CreateTodo(cctx, b.ID, store.TodoCreate{Title: "gone"}) })
	goodB := queue(func() (store.Event, error) { return db.CreateTodo(ctx, b.ID, store.TodoCreate{Title: "b"}) })
	cancel()
	if r := get(t, gone); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled change: %v, want context.Canceled", r.err)
	}
	release()
	for name, ch := range map[string]chan changeResult{"a": goodA, "b": goodB} {
		if r := get(t, ch); r.err != nil || r.ev.Seq != 1 || r.ev.Todo.Title != name {
			t.Fatalf("change %s batched with a cancelled one: %+v, %v", name, r.ev, r.err)
		}
	}
	todos, total, err := db.ListTodos(ctx, b.ID, store.TodoFilter{Limit: 10})
	if err != nil || total != 1 || todos[0].Title != "b" {
		t.Fatalf("user b's todos: %+v (total %d), %v; the cancelled change must not be written", todos, total, err)
	}

	// In flight: a batch of a and c, whose statement for c waits on c's seq row, locked
	// by another transaction. c's caller gives up; the batch goes on and commits both.
	c := storetest.User(t, db)
	if _, err := db.CreateTodo(ctx, c.ID, store.TodoCreate{Title: "c"}); err != nil {
		t.Fatal(err)
	}
	queue, release = holdBatches(t, db)
	tx, err := db.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT FROM user_seqs WHERE user_id = $1 FOR UPDATE`, c.ID); err != nil {
		t.Fatal(err)
	}
	cctx, cancel = context.WithCancel(ctx)
	defer cancel()
	goodA = queue(func() (store.Event, error) { return db.CreateTodo(ctx, a.ID, store.TodoCreate{Title: "a2"}) })
	gaveUp := queue(func() (store.Event, error) { return db.CreateTodo(cctx, c.ID, store.TodoCreate{Title: "c2"}) })
	b0, _, _ := postgres.BatchStats(db)
	release()
	waitFor(t, "the batch of a and c to be in flight", func() bool { b, _, _ := postgres.BatchStats(db); return b == b0+1 })
	cancel()
	if r := get(t, gaveUp); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("change whose caller gave up in flight: %v, want context.Canceled", r.err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if r := get(t, goodA); r.err != nil || r.ev.Seq != 2 {
		t.Fatalf("change batched with one whose caller gave up: %+v, %v", r.ev, r.err)
	}
	// The batch was not cancelled with its caller: c2 committed, with the next seq.
	waitFor(t, "c2 to commit", func() bool { n, _ := db.LastSeq(ctx, c.ID); return n == 2 })
	evs, err := db.EventsSince(ctx, c.ID, 1, 10)
	if err != nil || len(evs) != 1 || evs[0].Todo.Title != "c2" {
		t.Fatalf("c's events after seq 1: %+v, %v", evs, err)
	}
}
