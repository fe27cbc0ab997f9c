package app

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/evotodo/evo/store"
)

// BenchmarkEventFrame measures the frame encoding of a todo event: the json.Marshal of a
// store.Event that events.PublishEvent does once per change (and events.Since once per
// replayed event).
func BenchmarkEventFrame(b *testing.B) {
	at := time.Date(2026, 11, 28, 12, 34, 53, 396076000, time.UTC)
	desc := "oat milk, eggs, bread, coffee"
	ev := store.Event{Type: store.EventTodoUpdated, Seq: 123456, At: at, Todo: store.Todo{
		ID: "938a7a06-fe90-401c-84b6-6438912d8ca6", UserID: "NLPE26C4WGK5ZRBV4TQCRXSUD7YP2Z35",
		Title: "Buy milk and a few other things for the week", Description: &desc,
		CreatedAt: at, UpdatedAt: at,
	}}
	data, err := json.Marshal(ev)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(ev); err != nil {
			b.Fatal(err)
		}
	}
}
