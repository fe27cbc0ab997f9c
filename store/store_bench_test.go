package store_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/evotodo/evo/store"
	"github.com/evotodo/evo/store/storetest"
)

// BenchmarkTodosCreate measures the event-log append: Todos.Create writes the todo, bumps
// the user's seq and inserts the event in one transaction (no publisher). "serial" is one
// caller; "parallel" is 8 callers per GOMAXPROCS, each on its own user, the way many
// users' REST calls meet in the store.
func BenchmarkTodosCreate(b *testing.B) {
	ctx := context.Background()
	for _, bk := range storetest.Backends() {
		b.Run(bk.Name+"/serial", func(b *testing.B) {
			db := bk.Open(b)
			u := storetest.User(b, db)
			todos := store.NewTodos(db, nil)
			in := store.TodoCreate{Title: "Buy milk and a few other things for the week"}
			for b.Loop() {
				if _, err := todos.Create(ctx, u.ID, in); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bk.Name+"/parallel", func(b *testing.B) {
			db := bk.Open(b)
			users := make([]store.User, 64)
			for i := range users {
				users[i] = storetest.User(b, db)
			}
			todos := store.NewTodos(db, nil)
			var next atomic.Int64
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				u := users[int(next.Add(1))%len(users)]
				in := store.TodoCreate{Title: fmt.Sprintf("todo of %s", u.ID)}
				for pb.Next() {
					if _, err := todos.Create(ctx, u.ID, in); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
