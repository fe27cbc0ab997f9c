package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/google/uuid"

	"github.com/evotodo/evo/realtime"
	"github.com/evotodo/evo/store"
)

// TestIsolation is the cross-user isolation matrix: user B, on every surface
// (REST, /ws, /mcp, chat over REST, SSE and /ws, chat history), never sees,
// changes or learns of the existence of user A's data. "Learns" is checked
// by comparing every answer about A's data with the answer about data that
// does not exist: they must be byte for byte the same. On PostgreSQL the
// users' sockets are on two replicas (Redis fan-out); on SQLite on one.
//
// A and B both have a task titled "shared <tag>", so a command naming it
// could hit either; A also has "A-secret-<tag>". At the end every frame B's
// sockets received (and a fresh socket's replay from seq 0) is searched for
// A's id, A's todo ids and A's secret, and A's todos and event log are
// compared with what they were before B started.
func TestIsolation(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			var r1, r2 *testServer
			if backend == "postgres" {
				r1, r2 = startCluster(t)
			} else {
				r1 = startServer(t, backend, nil)
				r2 = r1
			}
			testIsolation(t, r1, r2)
		})
	}
}

// isoEnv is the two users of the matrix and what A owns.
type isoEnv struct {
	r1, r2       *testServer
	a, b         store.User
	aTok, bTok   string
	tag          string
	secret       string // the start of the title only A has: what B names it by
	hidden       string // the rest of that title: B never types it, so B must never read it
	shared       string // a title both have
	aSecret      store.Todo
	aShared      store.Todo
	bShared      store.Todo
	aTodos       []byte // A's list before B's attempts
	aSeq         int64  // A's last seq before B's attempts
	forbidden    []string
	bChatPrompts []string // every message B sent to the agent
}

func testIsolation(t *testing.T, r1, r2 *testServer) {
	e := &isoEnv{r1: r1, r2: r2, tag: strings.ToLower(rand.Text()[:8])}
	e.a, e.aTok = r1.user(t)
	e.b, e.bTok = r1.user(t)
	e.secret, e.shared = "A-secret-"+e.tag, "shared "+e.tag
	e.hidden = "hidden-" + strings.ToLower(rand.Text()[:8])

	// Observers: A on replica 1; B on both replicas, live from seq 0.
	aWS := live(t, r1, e.aTok)
	bWS := []*wsClient{live(t, r1, e.bTok), live(t, r2, e.bTok)}

	e.aSecret = r1.createTodo(t, e.aTok, e.secret+" "+e.hidden)
	e.aShared = r2.createTodo(t, e.aTok, e.shared)
	e.bShared = r1.createTodo(t, e.bTok, e.shared)
	// What B must never read: A's id, the id of A's secret task (B names
	// A's shared task by its id, so that one may come back as an echo), and
	// the part of A's titles B never typed.
	e.forbidden = []string{e.a.ID, e.aSecret.ID, e.hidden}
	_, e.aTodos = e.r1.do(t, "GET", "/api/todos?limit=1000", e.aTok, nil)
	e.aSeq = lastSeq(t, r1, e.a.ID)

	matrix := []struct {
		surface string
		run     func(t *testing.T, e *isoEnv)
	}{
		{"REST", isoREST},
		{"MCP", isoMCP},
		{"ChatREST", isoChatREST},
		{"ChatSSE", isoChatSSE},
		{"ChatWS", isoChatWS},
		{"ChatHistory", isoChatHistory},
		{"WSAuthFrame", isoWSAuthFrame},
	}
	for _, m := range matrix {
		if !t.Run(m.surface, func(t *testing.T) { m.run(t, e) }) {
			continue
		}
		e.checkAUntouched(t, m.surface)
	}

	// B's marker change, then everything B's observers got up to it.
	marker := r2.createTodo(t, e.bTok, "B marker "+e.tag)
	bLast := lastSeq(t, r1, e.b.ID)
	t.Run("WSLive", func(t *testing.T) {
		for i, ws := range bWS {
			frames := readUntilSeq(t, ws, bLast)
			e.checkFrames(t, "B's live socket "+string(rune('1'+i)), frames, bLast)
			if !slices.ContainsFunc(frames, func(f json.RawMessage) bool { return bytes.Contains(f, []byte(marker.ID)) }) {
				t.Errorf("B's socket %d: no frame of B's own marker change", i+1)
			}
		}
		// A's socket got A's events and chats, and none of B's.
		aChat := false
		for _, f := range readUntilSeq(t, aWS, lastSeq(t, r1, e.a.ID)) {
			if bytes.Contains(f, []byte(e.b.ID)) || bytes.Contains(f, []byte(e.bShared.ID)) || bytes.Contains(f, []byte("B marker")) ||
				bytes.Contains(f, []byte("B via MCP")) || bytes.Contains(f, []byte("B shared")) {
				t.Errorf("A's socket got B's frame %s", f)
			}
			aChat = aChat || bytes.Contains(f, []byte(`"chat.started"`))
		}
		if !aChat {
			t.Error("A's socket did not get A's own chat")
		}
	})
	t.Run("WSResumeFromZero", func(t *testing.T) {
		for _, r := range []*testServer{r1, r2} {
			ws := dialWS(t, r, e.bTok)
			hello := ws.expectType("hello")
			if hello.UserID != e.b.ID || hello.Seq != bLast {
				t.Errorf("hello: got user %s seq %d, want %s seq %d", hello.UserID, hello.Seq, e.b.ID, bLast)
			}
			replay := ws.resume(0)
			if int64(len(replay)) != bLast {
				t.Errorf("replay from 0: got %d events, want B's %d", len(replay), bLast)
			}
			for i, f := range replay {
				if f.Seq != int64(i+1) || f.Todo.UserID != e.b.ID {
					t.Errorf("replay frame %d: seq %d of user %s", i, f.Seq, f.Todo.UserID)
				}
				if f.Todo.ID == e.aSecret.ID || f.Todo.ID == e.aShared.ID || strings.Contains(f.Todo.Title, e.secret) {
					t.Errorf("replay frame %d is A's: %+v", i, f)
				}
			}
			// A resume beyond B's log (A's seq is higher) is a resync to B's seq.
			ws2 := dialWS(t, r, e.bTok)
			ws2.expectType("hello")
			ws2.send(map[string]any{"type": "resume", "since": bLast + e.aSeq + 100})
			if f := ws2.expectType("resync"); f.Seq != bLast {
				t.Errorf("resume beyond B's log: resync to %d, want %d", f.Seq, bLast)
			}
		}
	})
	t.Run("EventLogs", func(t *testing.T) {
		evs, err := r1.srv.db.EventsSince(context.Background(), e.b.ID, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if ev.Todo.UserID != e.b.ID || slices.Contains(e.forbidden, ev.Todo.ID) {
				t.Errorf("B's log holds %+v", ev)
			}
		}
	})
	e.checkAUntouched(t, "the end")
}

// checkAUntouched: A's list and event log are what they were.
func (e *isoEnv) checkAUntouched(t *testing.T, after string) {
	t.Helper()
	if _, got := e.r2.do(t, "GET", "/api/todos?limit=1000", e.aTok, nil); !bytes.Equal(got, e.aTodos) {
		t.Errorf("after %s: A's todos changed:\ngot  %s\nwant %s", after, got, e.aTodos)
	}
	if got := lastSeq(t, e.r1, e.a.ID); got != e.aSeq {
		t.Errorf("after %s: A's last seq is %d, was %d", after, got, e.aSeq)
	}
}

// leaks returns the first of A's identifiers found in data.
func (e *isoEnv) leaks(data []byte) string {
	for _, s := range e.forbidden {
		if bytes.Contains(data, []byte(s)) {
			return s
		}
	}
	return ""
}

func lastSeq(t *testing.T, ts *testServer, user string) int64 {
	t.Helper()
	seq, err := ts.srv.db.LastSeq(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// sameAnswer sends the same request about A's id and about a random one
// and requires identical answers.
func (e *isoEnv) sameAnswer(t *testing.T, what string, send func(id string) (int, []byte), wantStatus int) {
	t.Helper()
	for _, id := range []string{e.aSecret.ID, strings.ToUpper(e.aShared.ID)} {
		gotStatus, got := send(id)
		missStatus, miss := send(uuid.NewString())
		if gotStatus != missStatus || !bytes.Equal(got, miss) {
			t.Errorf("%s on A's %s: got %d %s; on a missing id %d %s", what, id, gotStatus, got, missStatus, miss)
		}
		if gotStatus != wantStatus {
			t.Errorf("%s on A's %s: got %d %s, want %d", what, id, gotStatus, got, wantStatus)
		}
		if s := e.leaks(bytes.ReplaceAll(got, []byte(id), nil)); s != "" {
			t.Errorf("%s: the answer names %s: %s", what, s, got)
		}
	}
}

func isoREST(t *testing.T, e *isoEnv) {
	for _, op := range []struct {
		method string
		body   any
	}{
		{"GET", nil},
		{"PUT", map[string]any{"title": "hijacked", "is_complete": true}},
		{"PATCH", map[string]any{"is_complete": true}},
		{"DELETE", nil},
	} {
		for _, r := range []*testServer{e.r1, e.r2} {
			e.sameAnswer(t, op.method+" /api/todos/{id}", func(id string) (int, []byte) {
				return r.do(t, op.method, "/api/todos/"+id, e.bTok, op.body)
			}, http.StatusNotFound)
		}
	}
	for _, q := range []string{"", "?limit=1000", "?is_complete=false", "?is_complete=true", "?skip=1"} {
		status, body := e.r2.do(t, "GET", "/api/todos"+q, e.bTok, nil)
		list := decode[TodoList](t, body)
		if status != http.StatusOK || e.leaks(body) != "" || list.Total > 1 {
			t.Errorf("B's list%s: got %d %s", q, status, body)
		}
	}
}

// mcpTool calls a tool over /mcp with a raw JSON-RPC request.
func mcpTool(t *testing.T, ts *testServer, token, name string, args map[string]any) (int, []byte) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 7, "method": "tools/call",
		"params": map[string]any{"name": name, "arguments": args}})
	status, _, data := mcpPost(t, ts, map[string]string{"Authorization": "Bearer " + token, "Mcp-Protocol-Version": "2025-06-18"}, string(body))
	return status, data
}

func isoMCP(t *testing.T, e *isoEnv) {
	for _, tool := range []struct {
		name string
		args map[string]any
	}{
		{"complete_task", map[string]any{}},
		{"complete_task", map[string]any{"completed": false}},
		{"update_task", map[string]any{"title": "hijacked"}},
		{"delete_task", map[string]any{}},
	} {
		for _, r := range []*testServer{e.r1, e.r2} {
			e.sameAnswer(t, "/mcp "+tool.name, func(id string) (int, []byte) {
				args := map[string]any{"task_id": id}
				for k, v := range tool.args {
					args[k] = v
				}
				status, data := mcpTool(t, r, e.bTok, tool.name, args)
				if !bytes.Contains(data, []byte(`"isError":true`)) || !bytes.Contains(data, []byte("not_found: task not found")) {
					t.Errorf("/mcp %s on %s: got %s, want a not_found tool error", tool.name, id, data)
				}
				return status, data
			}, http.StatusOK)
		}
	}
	for _, status := range []string{"all", "pending", "completed"} {
		code, data := mcpTool(t, e.r2, e.bTok, "list_tasks", map[string]any{"status": status, "limit": 1000})
		if code != http.StatusOK || e.leaks(data) != "" || bytes.Contains(data, []byte(`"isError":true`)) {
			t.Errorf("/mcp list_tasks %s: got %d %s", status, code, data)
		}
	}
	// A user_id argument is ignored: the task is B's.
	code, data := mcpTool(t, e.r1, e.bTok, "add_task", map[string]any{"title": "B via MCP " + e.tag, "user_id": e.a.ID})
	var res struct {
		Result struct {
			StructuredContent struct {
				TaskID string `json:"task_id"`
			} `json:"structuredContent"`
		} `json:"result"`
	}
	_ = json.Unmarshal(data, &res)
	if code != http.StatusOK || res.Result.StructuredContent.TaskID == "" || e.leaks(data) != "" {
		t.Fatalf("/mcp add_task with A's user_id: got %d %s", code, data)
	}
	status, body := e.r2.do(t, "GET", "/api/todos/"+res.Result.StructuredContent.TaskID, e.bTok, nil)
	if got := decode[store.Todo](t, body); status != http.StatusOK || got.UserID != e.b.ID {
		t.Errorf("/mcp add_task with A's user_id: the task is %d %s, want B's", status, body)
	}
}

// bChats are the messages B sends the builtin agent: each names A's data,
// or a title both users have.
func (e *isoEnv) bChats() []string {
	return []string{
		"delete " + e.secret, "done with " + e.secret, "rename " + e.secret + " to mine", "reopen " + e.secret,
		"list", "show completed", "done with shared", "rename shared " + e.tag + " to B shared " + e.tag,
		"delete " + e.aShared.ID, "done with " + e.aShared.ID,
	}
}

func (e *isoEnv) checkChatAnswer(t *testing.T, how, msg string, data []byte) {
	t.Helper()
	if s := e.leaks(data); s != "" {
		t.Errorf("%s %q: the answer names A's %s: %s", how, msg, s, data)
	}
}

func isoChatREST(t *testing.T, e *isoEnv) {
	for i, msg := range e.bChats() {
		r := []*testServer{e.r1, e.r2}[i%2]
		status, data := r.do(t, "POST", "/api/chat", e.bTok, map[string]string{"message": msg})
		if status != http.StatusOK {
			t.Fatalf("chat %q: got %d %s", msg, status, data)
		}
		e.bChatPrompts = append(e.bChatPrompts, msg)
		e.checkChatAnswer(t, "POST /api/chat", msg, data)
		reply := decode[ChatReply](t, data)
		if strings.HasPrefix(msg, "delete "+e.secret) && !strings.HasPrefix(reply.Response, "You have no task matching") {
			t.Errorf("chat %q: got %q", msg, reply.Response)
		}
	}
	// B's own "shared" task was renamed (and completed); A's was not.
	status, data := e.r1.do(t, "GET", "/api/todos/"+e.bShared.ID, e.bTok, nil)
	if got := decode[store.Todo](t, data); status != http.StatusOK || got.Title != "B shared "+e.tag || !got.IsComplete {
		t.Errorf("B's shared task after B's chats: got %d %s", status, data)
	}
}

func isoChatSSE(t *testing.T, e *isoEnv) {
	for _, msg := range []string{"delete " + e.secret, "what's left", "done with " + e.secret} {
		req, _ := http.NewRequest("POST", e.r2.URL+"/api/chat", strings.NewReader(`{"message":`+quote(msg)+`}`))
		req.Header.Set("Authorization", "Bearer "+e.bTok)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		events := readSSE(t, resp.Body)
		resp.Body.Close()
		e.bChatPrompts = append(e.bChatPrompts, msg)
		if len(events) == 0 || events[len(events)-1].Type != "chat.done" {
			t.Fatalf("SSE %q: got %s", msg, types(events))
		}
		for _, ev := range events {
			data, _ := json.Marshal(ev)
			e.checkChatAnswer(t, "SSE", msg, data)
		}
	}
}

func isoChatWS(t *testing.T, e *isoEnv) {
	ws := live(t, e.r1, e.bTok)
	for _, msg := range []string{"delete " + e.secret, "list", "rename " + e.secret + " to x"} {
		ws.send(map[string]string{"type": "chat", "message": msg})
		e.bChatPrompts = append(e.bChatPrompts, msg)
		for _, f := range ws.chatUntilEnd() {
			data, _ := json.Marshal(f)
			e.checkChatAnswer(t, "/ws chat", msg, data)
		}
	}
}

func isoChatHistory(t *testing.T, e *isoEnv) {
	// A has history too, so that there is something to leak.
	if status, data := e.r1.do(t, "POST", "/api/chat", e.aTok, map[string]string{"message": "add A-chat " + e.tag}); status != http.StatusOK {
		t.Fatalf("A's chat: %d %s", status, data)
	}
	_, e.aTodos = e.r1.do(t, "GET", "/api/todos?limit=1000", e.aTok, nil)
	e.aSeq = lastSeq(t, e.r1, e.a.ID)
	e.forbidden = append(e.forbidden, "A-chat "+e.tag)
	defer func() { e.forbidden = e.forbidden[:len(e.forbidden)-1] }() // A's socket has it, B's must not: checked here

	for _, q := range []string{"", "?limit=1", "?limit=100&before=2999-01-01T00:00:00Z", "?limit=0"} {
		for _, r := range []*testServer{e.r1, e.r2} {
			gotStatus, got := r.do(t, "GET", "/api/chat/"+e.a.ID+q, e.bTok, nil)
			missStatus, miss := r.do(t, "GET", "/api/chat/"+store.NewUserID()+q, e.bTok, nil)
			if gotStatus != http.StatusNotFound || gotStatus != missStatus || !bytes.Equal(got, miss) {
				t.Errorf("B reading A's history%s: got %d %s; a random id %d %s", q, gotStatus, got, missStatus, miss)
			}
		}
	}
	status, data := e.r2.do(t, "GET", "/api/chat/"+e.b.ID+"?limit=100", e.bTok, nil)
	if status != http.StatusOK || e.leaks(data) != "" {
		t.Errorf("B's own history: %d %s", status, data)
	}
	for _, m := range decode[[]store.ChatMessage](t, data) {
		if m.UserID != e.b.ID || !slices.Contains(e.bChatPrompts, m.Message) {
			t.Errorf("B's history holds %+v", m)
		}
	}
}

// isoWSAuthFrame: an auth frame with A's token on B's socket closes it
// (3502) rather than switching it to A's stream.
func isoWSAuthFrame(t *testing.T, e *isoEnv) {
	ws := live(t, e.r2, e.bTok)
	ws.send(map[string]string{"type": "auth", "token": e.aTok})
	ws.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, data, err := ws.conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != realtime.CloseForbidden {
				t.Fatalf("auth frame with A's token: got %v, want close %d", err, realtime.CloseForbidden)
			}
			return
		}
		if s := e.leaks(data); s != "" {
			t.Fatalf("after an auth frame with A's token, B's socket got %s", data)
		}
	}
}

// readUntilSeq reads a socket's frames until the todo event with seq last
// has arrived, then for 300 ms more (whatever else would come), and returns
// them all.
func readUntilSeq(t *testing.T, c *wsClient, last int64) []json.RawMessage {
	t.Helper()
	var out []json.RawMessage
	var seen int64
	deadline := time.Now().Add(15 * time.Second)
	for {
		until := deadline
		if seen >= last {
			until = time.Now().Add(300 * time.Millisecond)
		}
		c.conn.SetReadDeadline(until)
		_, data, err := c.conn.ReadMessage()
		if err != nil {
			if seen >= last {
				return out
			}
			t.Fatalf("read: %v (seq %d of %d)", err, seen, last)
		}
		out = append(out, data)
		var f frame
		if json.Unmarshal(data, &f) == nil && strings.HasPrefix(f.Type, "todo.") {
			seen = max(seen, f.Seq)
		}
	}
}

// checkFrames: B's socket frames carry nothing of A's, todo events are B's,
// every seq once and in order, and chat frames are of B's own messages.
func (e *isoEnv) checkFrames(t *testing.T, who string, frames []json.RawMessage, last int64) {
	t.Helper()
	var seqs []int64
	chats := 0
	for _, data := range frames {
		if s := e.leaks(data); s != "" {
			t.Errorf("%s got a frame naming A's %s: %s", who, s, data)
		}
		var f chatFrameT
		if err := json.Unmarshal(data, &f); err != nil {
			t.Fatalf("%s: frame %s: %v", who, data, err)
		}
		switch {
		case strings.HasPrefix(f.Type, "todo."):
			if f.Todo.UserID != e.b.ID {
				t.Errorf("%s got another user's event %s", who, data)
			}
			seqs = append(seqs, f.Seq)
		case f.Type == "chat.started":
			var msg string
			_ = json.Unmarshal(f.Message, &msg)
			if !slices.Contains(e.bChatPrompts, msg) {
				t.Errorf("%s got a chat B did not start: %s", who, data)
			}
			chats++
		}
	}
	var want []int64
	for s := int64(1); s <= last; s++ {
		want = append(want, s)
	}
	if !slices.Equal(seqs, want) {
		t.Errorf("%s: seqs %v, want 1..%d once each in order", who, seqs, last)
	}
	if chats != len(e.bChatPrompts) { // the socket did hear B's own chats: it was listening
		t.Errorf("%s: %d chat.started frames, B started %d chats", who, chats, len(e.bChatPrompts))
	}
}
