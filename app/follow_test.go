package app

import (
	"testing"
	"time"

	"github.com/evotodo/evo/agent"
	"github.com/evotodo/evo/store"
)

// liveWithin is how soon a change made by another process must reach a
// socket: the follower polls every followInterval (250 ms) and Redis is
// immediate; the margin is for a loaded machine.
const liveWithin = 3 * time.Second

// expectLive reads the next frame, which must come within liveWithin and be
// an event of type typ with seq, and returns it.
func (c *wsClient) expectLive(typ string, seq int64) frame {
	c.t.Helper()
	start := time.Now()
	f := c.expectType(typ)
	took := time.Since(start)
	if f.Seq != seq {
		c.t.Fatalf("%s: got seq %d, want %d (%+v)", typ, f.Seq, seq, f)
	}
	if took > liveWithin {
		c.t.Fatalf("%s seq %d: arrived after %v, want within %v", typ, seq, took, liveWithin)
	}
	c.t.Logf("%s seq %d arrived after %v", typ, seq, took.Round(time.Millisecond))
	return f
}

// expectNothingMore checks that no frame is queued before a pong: no
// duplicate of an event already read.
func (c *wsClient) expectNothingMore() {
	c.t.Helper()
	c.send(map[string]string{"type": "ping"})
	c.expectType("pong")
}

// liveSocket opens a socket on ts for token that is past its resume and
// receives live events.
func liveSocket(t *testing.T, ts *testServer, token string) *wsClient {
	t.Helper()
	ws := dialWS(t, ts, token)
	ws.expectType("hello")
	ws.resume(0)
	return ws
}

// TestMCPStdioLive: changes made through `evo mcp` reach the user's open
// socket live, exactly once and in seq order: embedded, because the server
// follows the SQLite event log it shares with the command; on PostgreSQL,
// because the command publishes through Redis like a replica.
func TestMCPStdioLive(t *testing.T) {
	for _, tc := range []struct {
		name    string
		backend string
		env     func(t *testing.T) map[string]string
	}{
		{"SQLiteFollowsTheLog", "sqlite", func(*testing.T) map[string]string { return nil }},
		{"PostgresRedisPublishes", "postgres", func(t *testing.T) map[string]string {
			return map[string]string{"REDIS_URL": redisURL(t)}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, tc.backend, tc.env(t))
			_, tok := ts.user(t)
			ws := liveSocket(t, ts, tok)

			c, closeClient := mcpStdio(t, ts.srv.cfg, nil, "--token", tok)
			defer closeClient()
			added := mcpOK[agent.Change](t, c, "add_task", map[string]any{"title": "from stdio"})
			if f := ws.expectLive(store.EventTodoCreated, 1); f.Todo.ID != added.TaskID || f.Todo.Title != "from stdio" {
				t.Fatalf("after add_task: got %+v", f)
			}
			mcpOK[agent.Change](t, c, "complete_task", map[string]any{"task_id": added.TaskID})
			if f := ws.expectLive(store.EventTodoUpdated, 2); !f.Todo.IsComplete {
				t.Fatalf("after complete_task: got %+v", f)
			}
			// The server's own change comes next, once.
			ts.createTodo(t, tok, "from REST")
			ws.expectLive(store.EventTodoCreated, 3)
			mcpOK[agent.Change](t, c, "delete_task", map[string]any{"task_id": added.TaskID})
			ws.expectLive(store.EventTodoDeleted, 4)
			ws.expectNothingMore()
		})
	}
}

// TestTwoServersOneDataDir: two servers on one DATA_DIR both deliver every
// change live, whichever of them made it: each follows the SQLite event log
// they share. Each socket gets each event once, in seq order.
func TestTwoServersOneDataDir(t *testing.T) {
	js := newJWKSServer(t)
	env := map[string]string{"DATA_DIR": t.TempDir()}
	a, b := startReplica(t, js, "sqlite", env), startReplica(t, js, "sqlite", env)
	_, tok := a.user(t)
	onA, onB := liveSocket(t, a, tok), liveSocket(t, b, tok)

	todo := b.createTodo(t, tok, "made on B")
	for _, ws := range []*wsClient{onA, onB} {
		if f := ws.expectLive(store.EventTodoCreated, 1); f.Todo.ID != todo.ID {
			t.Fatalf("got %+v, want todo %s", f, todo.ID)
		}
	}
	b.do(t, "PATCH", "/api/todos/"+todo.ID, tok, map[string]bool{"is_complete": true})
	a.do(t, "PUT", "/api/todos/"+todo.ID, tok, map[string]string{"title": "renamed on A"})
	b.do(t, "DELETE", "/api/todos/"+todo.ID, tok, nil)
	for _, ws := range []*wsClient{onA, onB} {
		if f := ws.expectLive(store.EventTodoUpdated, 2); !f.Todo.IsComplete {
			t.Fatalf("got %+v", f)
		}
		if f := ws.expectLive(store.EventTodoUpdated, 3); f.Todo.Title != "renamed on A" {
			t.Fatalf("got %+v", f)
		}
		ws.expectLive(store.EventTodoDeleted, 4)
		ws.expectNothingMore()
	}
}
