package postgres_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/evotodo/evo/store"
	"github.com/evotodo/evo/store/storetest"
)

// BenchmarkListTodos is the store's part of GET /api/todos?limit=20: the count and the
// first page of 20 of a user's 25 todos, 8 callers per GOMAXPROCS on 16 users.
func BenchmarkListTodos(b *testing.B) {
	ctx := context.Background()
	db := storetest.Postgres(b)
	users := make([]store.User, 16)
	for i := range users {
		users[i] = storetest.User(b, db)
		for j := range 25 {
			if _, err := db.CreateTodo(ctx, users[i].ID, store.TodoCreate{Title: fmt.Sprintf("todo %d", j)}); err != nil {
				b.Fatal(err)
			}
		}
	}
	var next atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		u := users[int(next.Add(1))%len(users)]
		for pb.Next() {
			todos, total, err := db.ListTodos(ctx, u.ID, store.TodoFilter{Limit: 20})
			if err != nil || len(todos) != 20 || total != 25 {
				b.Errorf("ListTodos: %d todos, total %d, %v", len(todos), total, err)
				return
			}
		}
	})
}
