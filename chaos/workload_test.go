//go:build chaos

package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The workload: a stream of changes through REST, MCP (/mcp) and chat (the
// builtin agent), each recorded as an attempt with what the API answered.
// Titles are unique random words, so that every create and rename names its
// event, and a chat "done with <title>" matches exactly one task.

// chaosUser is a user, its token, and what the workload believes of its
// todos (the workers of a user are its only writers).
type chaosUser struct {
	id, token string
	mu        sync.Mutex
	todos     map[string]*todoModel // by id: todos whose create was answered
}

type todoModel struct {
	title    string
	complete bool
	sure     bool // no change of unknown outcome since the last known state
}

// Kinds of change.
const (
	kindCreate = "create"
	kindRename = "rename"
	kindToggle = "toggle"
	kindDelete = "delete"
)

// attempt is one change the workload asked for.
type attempt struct {
	user      *chaosUser
	surface   string // rest, mcp, chat
	kind      string
	todoID    string // rename, toggle, delete; create once answered
	title     string // create, rename: the title asked for
	complete  bool   // toggle
	status    int    // HTTP status; 0: no answer
	committed bool   // the API said it was done
	updatedAt string // REST: the todo's updated_at as answered
	took      time.Duration
	err       string
}

type workload struct {
	users    []*chaosUser
	replicas []*replica
	up       []atomic.Bool // replicas believed up (the orchestrator's view)
	client   *http.Client

	mu       sync.Mutex
	attempts []*attempt
	statuses map[int]int    // HTTP status -> count, for the report
	errors   map[string]int // transport errors by kind
	bad      []string       // answers that break the API contract (a 500, a malformed body)
}

func newWorkload(users []*chaosUser, replicas []*replica) *workload {
	w := &workload{users: users, replicas: replicas, up: make([]atomic.Bool, len(replicas)),
		statuses: map[int]int{}, errors: map[string]int{},
		client: &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}}}
	for i := range w.up {
		w.up[i].Store(true)
	}
	return w
}

func randWord() string {
	const letters = "abcdefghijklmnopqrstuvwxyz"
	b := make([]byte, 12)
	for i := range b {
		b[i] = letters[rand.IntN(len(letters))]
	}
	return string(b)
}

// base picks a replica believed up (any, if none is).
func (w *workload) base() string {
	var ups []int
	for i := range w.up {
		if w.up[i].Load() {
			ups = append(ups, i)
		}
	}
	if len(ups) == 0 {
		return w.replicas[rand.IntN(len(w.replicas))].URL()
	}
	return w.replicas[ups[rand.IntN(len(ups))]].URL()
}

// call sends one request and returns its status (0: no answer) and body.
func (w *workload) call(ctx context.Context, method, url, token string, body any, header map[string]string) (int, []byte, string) {
	var r io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return 0, nil, err.Error()
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		kind := "other"
		switch s := err.Error(); {
		case strings.Contains(s, "connection refused"):
			kind = "connection refused"
		case strings.Contains(s, "reset by peer"), strings.Contains(s, "EOF"):
			kind = "connection lost"
		case strings.Contains(s, "Timeout"), strings.Contains(s, "deadline"):
			kind = "timeout"
		}
		w.mu.Lock()
		w.errors[kind]++
		w.mu.Unlock()
		return 0, nil, err.Error()
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err.Error()
	}
	w.mu.Lock()
	w.statuses[resp.StatusCode]++
	if resp.StatusCode >= 500 && resp.StatusCode != http.StatusServiceUnavailable {
		w.bad = append(w.bad, fmt.Sprintf("%s %s: %d %s", method, url, resp.StatusCode, data))
	}
	w.mu.Unlock()
	return resp.StatusCode, data, ""
}

func (w *workload) record(a *attempt) {
	w.mu.Lock()
	w.attempts = append(w.attempts, a)
	w.mu.Unlock()
}

func (w *workload) contract(format string, args ...any) {
	w.mu.Lock()
	w.bad = append(w.bad, fmt.Sprintf(format, args...))
	w.mu.Unlock()
}

// start runs one goroutine of changes per user, pausing pause between
// them, until stop (which waits for them) or the end of the test.
func (w *workload) start(t *testing.T, pause time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var wg sync.WaitGroup
	for _, u := range w.users {
		wg.Add(1)
		go w.run(ctx, []*chaosUser{u}, pause, &wg)
	}
	return func() {
		cancel()
		wg.Wait()
	}
}

// run makes changes for users until ctx ends, pausing pause between them.
func (w *workload) run(ctx context.Context, users []*chaosUser, pause time.Duration, wg *sync.WaitGroup) {
	defer wg.Done()
	for ctx.Err() == nil {
		u := users[rand.IntN(len(users))]
		w.step(ctx, u)
		sleep(ctx, pause/2+time.Duration(rand.Int64N(int64(pause))))
	}
}

// step makes one change for u: a create while u has few todos, otherwise
// any kind, through a random surface.
func (w *workload) step(ctx context.Context, u *chaosUser) {
	u.mu.Lock()
	var known []string
	for id, td := range u.todos {
		if td.sure {
			known = append(known, id)
		}
	}
	n := len(u.todos)
	u.mu.Unlock()
	kind := kindCreate
	if n >= 4 && len(known) > 0 {
		switch p := rand.IntN(100); {
		case p < 25:
			kind = kindCreate
		case p < 55:
			kind = kindToggle
		case p < 80:
			kind = kindRename
		default:
			kind = kindDelete
		}
	}
	surface := []string{"rest", "rest", "rest", "mcp", "mcp", "chat"}[rand.IntN(6)]
	if surface == "chat" && (kind == kindRename || kind == kindDelete) {
		surface = "rest" // the chat workload adds and completes
	}
	a := &attempt{user: u, surface: surface, kind: kind}
	var td *todoModel
	if kind != kindCreate {
		a.todoID = known[rand.IntN(len(known))]
		u.mu.Lock()
		td = u.todos[a.todoID]
		cur := *td
		td.sure = false // until answered
		u.mu.Unlock()
		switch kind {
		case kindToggle:
			a.complete = !cur.complete
			if surface == "chat" {
				if cur.complete {
					surface, a.surface = "rest", "rest" // "done with" only completes
				} else {
					a.title = cur.title // what the chat names
				}
			}
		case kindRename:
			a.title = kind[:1] + "-" + randWord()
		}
	} else {
		a.title = surface[:1] + "-" + randWord()
	}
	ctx, cancel := context.WithTimeout(ctx, 12*time.Second)
	defer cancel()
	start := time.Now()
	switch surface {
	case "rest":
		w.rest(ctx, a)
	case "mcp":
		w.mcp(ctx, a)
	case "chat":
		w.chat(ctx, a)
	}
	a.took = time.Since(start)
	w.record(a)

	u.mu.Lock()
	defer u.mu.Unlock()
	switch {
	case kind == kindCreate && a.committed:
		u.todos[a.todoID] = &todoModel{title: a.title, sure: true}
	case kind == kindDelete && a.committed:
		delete(u.todos, a.todoID)
	case kind == kindRename && a.committed:
		td.title, td.sure = a.title, true
	case kind == kindToggle && a.committed:
		td.complete, td.sure = a.complete, true
	case kind == kindDelete && (a.status == http.StatusNotFound):
		delete(u.todos, a.todoID) // an earlier delete of unknown outcome did it
	case kind != kindCreate && a.status >= 400 && a.status < 500 && a.status != http.StatusNotFound:
		td.sure = true // refused: nothing changed
	case kind != kindCreate && a.status == http.StatusServiceUnavailable:
		// 503 may come after the commit (the answer lost on the way): unknown.
	}
}

// restTodo is the todo in a REST answer.
type restTodo struct {
	ID         string `json:"id"`
	UserID     string `json:"user_id"`
	Title      string `json:"title"`
	IsComplete bool   `json:"is_complete"`
	UpdatedAt  string `json:"updated_at"`
}

func (w *workload) rest(ctx context.Context, a *attempt) {
	base, tok := w.base(), a.user.token
	var status int
	var data []byte
	switch a.kind {
	case kindCreate:
		status, data, a.err = w.call(ctx, "POST", base+"/api/todos", tok, map[string]any{"title": a.title}, nil)
	case kindRename:
		status, data, a.err = w.call(ctx, "PUT", base+"/api/todos/"+a.todoID, tok, map[string]any{"title": a.title}, nil)
	case kindToggle:
		status, data, a.err = w.call(ctx, "PATCH", base+"/api/todos/"+a.todoID, tok, map[string]any{"is_complete": a.complete}, nil)
	case kindDelete:
		status, data, a.err = w.call(ctx, "DELETE", base+"/api/todos/"+a.todoID, tok, nil, nil)
	}
	a.status = status
	if status < 200 || status >= 300 {
		return
	}
	a.committed = true
	if a.kind == kindDelete {
		return
	}
	var td restTodo
	if err := json.Unmarshal(data, &td); err != nil || td.ID == "" || td.UserID != a.user.id {
		w.contract("%s %s: 2xx with %s", a.surface, a.kind, data)
		return
	}
	a.todoID, a.updatedAt = td.ID, td.UpdatedAt
	if (a.kind == kindCreate || a.kind == kindRename) && td.Title != a.title || a.kind == kindToggle && td.IsComplete != a.complete {
		w.contract("%s %s: asked %+v, answered %s", a.surface, a.kind, a, data)
	}
}

// mcpChange is the structured result of a changing tool.
type mcpChange struct {
	TaskID string `json:"task_id"`
	Status string `json:"status"`
	Title  string `json:"title"`
	Task   struct {
		ID        string `json:"id"`
		Title     string `json:"title"`
		Completed bool   `json:"completed"`
	} `json:"task"`
}

func (w *workload) mcp(ctx context.Context, a *attempt) {
	var name string
	args := map[string]any{}
	switch a.kind {
	case kindCreate:
		name, args["title"] = "add_task", a.title
	case kindRename:
		name, args["task_id"], args["title"] = "update_task", a.todoID, a.title
	case kindToggle:
		name, args["task_id"], args["completed"] = "complete_task", a.todoID, a.complete
	case kindDelete:
		name, args["task_id"] = "delete_task", a.todoID
	}
	req := map[string]any{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": map[string]any{"name": name, "arguments": args}}
	status, data, err := w.call(ctx, "POST", w.base()+"/mcp", a.user.token, req,
		map[string]string{"Accept": "application/json, text/event-stream", "Mcp-Protocol-Version": "2025-06-18"})
	a.status, a.err = status, err
	if status != http.StatusOK {
		return
	}
	var resp struct {
		Result struct {
			IsError           bool            `json:"isError"`
			StructuredContent json.RawMessage `json:"structuredContent"`
			Content           []struct {
				Text string `json:"text"`
			} `json:"content"`
		} `json:"result"`
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(data, &resp) != nil || resp.Error != nil {
		w.contract("mcp %s: %s", name, data)
		return
	}
	if resp.Result.IsError {
		// A tool error: not done. not_found and invalid are certain refusals;
		// unavailable may come after a commit whose answer was lost.
		text := ""
		if len(resp.Result.Content) > 0 {
			text = resp.Result.Content[0].Text
		}
		switch {
		case strings.HasPrefix(text, "not_found"):
			a.status = http.StatusNotFound
		case strings.HasPrefix(text, "unavailable"), strings.HasPrefix(text, "internal"):
			a.status = http.StatusServiceUnavailable
			if strings.HasPrefix(text, "internal") {
				w.contract("mcp %s: %s", name, text)
			}
		default:
			a.status = http.StatusUnprocessableEntity
		}
		return
	}
	var c mcpChange
	if json.Unmarshal(resp.Result.StructuredContent, &c) != nil || c.TaskID == "" {
		w.contract("mcp %s: %s", name, data)
		return
	}
	a.committed, a.todoID = true, c.TaskID
	if (a.kind == kindCreate || a.kind == kindRename) && c.Task.Title != a.title || a.kind == kindToggle && c.Task.Completed != a.complete {
		w.contract("mcp %s: asked %+v, answered %s", name, a, data)
	}
}

// chatReply is the part of POST /api/chat's answer the workload reads.
type chatReply struct {
	Status    string `json:"status"`
	Response  string `json:"response"`
	ToolCalls []struct {
		Name   string          `json:"name"`
		Result json.RawMessage `json:"result"`
		Error  string          `json:"error"`
	} `json:"tool_calls"`
}

// chat sends "add <title>" or "done with <title>" to the builtin agent. It
// counts as committed when the stored exchange lists the changing tool's
// result.
func (w *workload) chat(ctx context.Context, a *attempt) {
	msg := "add " + a.title
	tool := "add_task"
	if a.kind == kindToggle {
		msg, tool = "done with "+a.title, "complete_task"
	}
	status, data, err := w.call(ctx, "POST", w.base()+"/api/chat", a.user.token, map[string]any{"message": msg}, nil)
	a.status, a.err = status, err
	if status != http.StatusOK {
		return
	}
	var r chatReply
	if json.Unmarshal(data, &r) != nil {
		w.contract("chat %q: %s", msg, data)
		return
	}
	for _, c := range r.ToolCalls {
		if c.Name != tool {
			continue
		}
		if c.Error != "" || len(c.Result) == 0 {
			a.status = http.StatusServiceUnavailable // the tool failed: outcome as the error says, count it unknown
			if strings.HasPrefix(c.Error, "not_found") || strings.HasPrefix(c.Error, "invalid") {
				a.status = http.StatusUnprocessableEntity
			}
			return
		}
		var ch mcpChange
		if json.Unmarshal(c.Result, &ch) != nil || ch.TaskID == "" {
			w.contract("chat %q: tool result %s", msg, c.Result)
			return
		}
		if a.kind == kindToggle && ch.TaskID != a.todoID {
			w.contract("chat %q completed %s, not %s", msg, ch.TaskID, a.todoID)
		}
		a.committed, a.todoID = true, ch.TaskID
		return
	}
	// No changing tool ran (e.g. the task was not found as pending).
	a.status = http.StatusUnprocessableEntity
}
