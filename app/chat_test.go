package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/evotodo/evo/agent"
	"github.com/evotodo/evo/realtime"
	"github.com/evotodo/evo/store"
	"github.com/evotodo/evo/store/postgres"
	"github.com/evotodo/evo/store/storetest"
)

// fakeLLM is a real HTTP server speaking the OpenAI chat-completions
// streaming protocol as the API does: SSE "data: {chunk}" lines with
// choices[0].delta.content tokens, tool calls streamed as delta.tool_calls
// (id, type and function.name first, then the arguments in fragments),
// a finish_reason, a usage chunk and "data: [DONE]". Each request is
// answered by script(n, request), n counting from 1.
type fakeLLM struct {
	*httptest.Server
	script func(n int, req llmRequest) llmReply

	mu        sync.Mutex
	reqs      []llmRequest
	cancelled chan int // numbers of the requests whose client went away mid-answer
}

// llmRequest is a chat-completions request as the fake reads it.
type llmRequest struct {
	Model    string `json:"model"`
	Stream   bool   `json:"stream"`
	Messages []struct {
		Role       string `json:"role"`
		Content    string `json:"content"`
		ToolCallID string `json:"tool_call_id"`
		ToolCalls  []struct {
			ID       string `json:"id"`
			Function struct {
				Name      string `json:"name"`
				Arguments string `json:"arguments"`
			} `json:"function"`
		} `json:"tool_calls"`
	} `json:"messages"`
	Tools []struct {
		Type     string `json:"type"`
		Function struct {
			Name       string          `json:"name"`
			Parameters json.RawMessage `json:"parameters"`
		} `json:"function"`
	} `json:"tools"`
}

// toolResults returns the contents of the request's tool messages.
func (r llmRequest) toolResults() []string {
	var out []string
	for _, m := range r.Messages {
		if m.Role == "tool" {
			out = append(out, m.Content)
		}
	}
	return out
}

// llmReply is one scripted answer.
type llmReply struct {
	tokens []string
	calls  []llmCall
	// status, if set, answers with this HTTP status and an OpenAI error body
	// (echoing the request's API key if echoKey is set, as some providers do).
	status  int
	echoKey bool
	// abortAfter > 0 breaks the connection after that many tokens.
	abortAfter int
	// gateAfter > 0 waits for gate (or the client leaving) after that many tokens.
	gateAfter int
	gate      chan struct{}
	// hang sends the headers, then nothing until the client leaves.
	hang bool
}

type llmCall struct{ id, name, args string }

func newFakeLLM(t testing.TB, script func(n int, req llmRequest) llmReply) *fakeLLM {
	t.Helper()
	f := &fakeLLM{script: script, cancelled: make(chan int, 16)}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

// env returns the server variables that point the agent at f.
func (f *fakeLLM) env(extra ...string) map[string]string {
	env := map[string]string{"LLM_PROVIDER": "openai", "LLM_BASE_URL": f.URL + "/v1", "LLM_MODEL": "fake-model", "LLM_API_KEY": "sk-test"}
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	return env
}

func (f *fakeLLM) requests() []llmRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]llmRequest(nil), f.reqs...)
}

func (f *fakeLLM) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/chat/completions" || r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	var req llmRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	n := len(f.reqs)
	f.mu.Unlock()
	reply := f.script(n, req)
	if reply.status != 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(reply.status)
		msg := fmt.Sprintf("scripted failure %d", reply.status)
		if reply.echoKey {
			msg = "Incorrect API key provided: " + strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ") + ". Header was: " + r.Header.Get("Authorization")
		}
		body, _ := json.Marshal(map[string]any{"error": map[string]string{"message": msg, "type": "invalid_request_error"}})
		w.Write(body)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	flusher := w.(http.Flusher)
	chunk := func(choice string) {
		fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-%d\",\"object\":\"chat.completion.chunk\",\"created\":1764300000,\"model\":%q,\"choices\":[%s]}\n\n", n, req.Model, choice)
		flusher.Flush()
	}
	waitGone := func(d time.Duration) {
		select {
		case <-r.Context().Done():
			f.cancelled <- n
		case <-time.After(d):
		}
	}
	chunk(`{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}`)
	if reply.hang {
		waitGone(10 * time.Second)
		return
	}
	for i, tok := range reply.tokens {
		if reply.abortAfter > 0 && i == reply.abortAfter {
			panic(http.ErrAbortHandler) // the connection breaks mid-stream
		}
		if reply.gateAfter > 0 && i == reply.gateAfter {
			select {
			case <-reply.gate:
			case <-r.Context().Done():
				f.cancelled <- n
				return
			}
		}
		delta, _ := json.Marshal(map[string]string{"content": tok})
		chunk(`{"index":0,"delta":` + string(delta) + `,"finish_reason":null}`)
	}
	for i, c := range reply.calls {
		head, _ := json.Marshal(map[string]any{"tool_calls": []any{map[string]any{
			"index": i, "id": c.id, "type": "function", "function": map[string]string{"name": c.name, "arguments": ""}}}})
		chunk(`{"index":0,"delta":` + string(head) + `,"finish_reason":null}`)
		for _, frag := range fragments(c.args, 3) {
			d, _ := json.Marshal(map[string]any{"tool_calls": []any{map[string]any{
				"index": i, "function": map[string]string{"arguments": frag}}}})
			chunk(`{"index":0,"delta":` + string(d) + `,"finish_reason":null}`)
		}
	}
	finish := "stop"
	if len(reply.calls) > 0 {
		finish = "tool_calls"
	}
	chunk(`{"index":0,"delta":{},"finish_reason":"` + finish + `"}`)
	fmt.Fprint(w, "data: {\"id\":\"u\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":5,\"total_tokens\":15}}\n\n")
	fmt.Fprint(w, "data: [DONE]\n\n")
	flusher.Flush()
}

// fragments cuts s into about n pieces.
func fragments(s string, n int) []string {
	var out []string
	size := max(1, (len(s)+n-1)/n)
	for len(s) > size {
		out = append(out, s[:size])
		s = s[size:]
	}
	return append(out, s)
}

// chatFrameT is a server frame as the chat tests read it.
type chatFrameT struct {
	Type           string          `json:"type"`
	ID             string          `json:"id"`
	Seq            int64           `json:"seq"`
	Todo           store.Todo      `json:"todo"`
	Delta          string          `json:"delta"`
	Name           string          `json:"name"`
	Arguments      json.RawMessage `json:"arguments"`
	Result         json.RawMessage `json:"result"`
	Error          string          `json:"error"`
	Code           string          `json:"code"`
	Message        json.RawMessage `json:"message"`
	ConversationID json.RawMessage `json:"conversation_id"`
}

// stored decodes the message of a chat.done frame.
func (f chatFrameT) stored(t testing.TB) store.ChatMessage {
	t.Helper()
	return decode[store.ChatMessage](t, f.Message)
}

func (c *wsClient) readChat() chatFrameT {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, data, err := c.conn.ReadMessage()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	var f chatFrameT
	if err := json.Unmarshal(data, &f); err != nil {
		c.t.Fatalf("decode %s: %v", data, err)
	}
	return f
}

// chatUntilEnd reads frames up to and including chat.done or chat.error.
func (c *wsClient) chatUntilEnd() []chatFrameT {
	c.t.Helper()
	var got []chatFrameT
	for {
		f := c.readChat()
		got = append(got, f)
		if f.Type == "chat.done" || f.Type == "chat.error" {
			return got
		}
	}
}

// expectChat reads the next frame and checks its type.
func (c *wsClient) expectChat(typ string) chatFrameT {
	c.t.Helper()
	f := c.readChat()
	if f.Type != typ {
		c.t.Fatalf("frame: got %+v, want type %s", f, typ)
	}
	return f
}

// live dials a socket for token and waits until it gets live events.
func live(t testing.TB, ts *testServer, token string) *wsClient {
	t.Helper()
	ws := dialWS(t, ts, token)
	ws.expectType("hello")
	ws.resume(0)
	return ws
}

func types(fs []chatFrameT) string {
	var ts []string
	for _, f := range fs {
		ts = append(ts, f.Type)
	}
	return strings.Join(ts, " ")
}

func tokens(fs []chatFrameT) string {
	var b strings.Builder
	for _, f := range fs {
		if f.Type == "chat.token" {
			b.WriteString(f.Delta)
		}
	}
	return b.String()
}

func (ts *testServer) chatHistory(t testing.TB, token, user string) []store.ChatMessage {
	t.Helper()
	status, body := ts.do(t, "GET", "/api/chat/"+user, token, nil)
	if status != http.StatusOK {
		t.Fatalf("history: got %d %s", status, body)
	}
	return decode[[]store.ChatMessage](t, body)
}

func toolCallsOf(t testing.TB, m store.ChatMessage) []agent.ToolCall {
	t.Helper()
	var calls []agent.ToolCall
	if err := json.Unmarshal(m.ToolCalls, &calls); err != nil {
		t.Fatalf("tool_calls %s: %v", m.ToolCalls, err)
	}
	return calls
}

// TestChatAddTaskOverOpenAIProtocol: "add buy milk" makes the model call
// add_task; the todo exists; the socket sees chat.started, todo.created,
// chat.tool, the streamed tokens in order, chat.done; the exchange is
// stored, shows in history, and is the next message's context.
func TestChatAddTaskOverOpenAIProtocol(t *testing.T) {
	answer := []string{"Added ", "“buy milk” ", "to your ", "list."}
	llm := newFakeLLM(t, func(n int, req llmRequest) llmReply {
		switch n {
		case 1:
			return llmReply{calls: []llmCall{{"call_abc", "add_task", `{"title":"buy milk"}`}}}
		case 2:
			return llmReply{tokens: answer}
		}
		return llmReply{tokens: []string{"You added buy milk."}}
	})
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			llm.mu.Lock()
			llm.reqs = nil
			llm.mu.Unlock()
			ts := startServer(t, b, llm.env())
			u, tok := ts.user(t)
			ws := live(t, ts, tok)

			status, body := ts.do(t, "POST", "/api/chat", tok, map[string]any{"message": "add buy milk", "conversation_id": 7})
			if status != http.StatusOK {
				t.Fatalf("POST /api/chat: got %d %s", status, body)
			}
			reply := decode[ChatReply](t, body)
			if reply.Status != "completed" || reply.Response != strings.Join(answer, "") || reply.Message != "add buy milk" ||
				reply.UserID != u.ID || string(reply.ConversationID) != "7" {
				t.Fatalf("reply: got %s", body)
			}
			calls := toolCallsOf(t, reply.ChatMessage)
			if len(calls) != 1 || calls[0].Name != "add_task" || calls[0].Error != "" || !strings.Contains(string(calls[0].Arguments), "buy milk") {
				t.Fatalf("tool_calls: got %s", reply.ToolCalls)
			}

			frames := ws.chatUntilEnd()
			want := "chat.started todo.created chat.tool chat.token chat.token chat.token chat.token chat.done"
			if got := types(frames); got != want {
				t.Fatalf("frames: got %s, want %s", got, want)
			}
			id := frames[0].ID
			for _, f := range frames {
				if f.Type != "todo.created" && f.ID != id {
					t.Fatalf("frame %s has id %q, want %q", f.Type, f.ID, id)
				}
			}
			if string(frames[0].Message) != `"add buy milk"` || string(frames[0].ConversationID) != "7" {
				t.Fatalf("chat.started: got %+v", frames[0])
			}
			if f := frames[1]; f.Seq != 1 || f.Todo.Title != "buy milk" {
				t.Fatalf("todo.created: got %+v", f)
			}
			if f := frames[2]; f.Name != "add_task" || !strings.Contains(string(f.Result), `"title":"buy milk"`) || f.Error != "" {
				t.Fatalf("chat.tool: got %+v", f)
			}
			for i, tok := range answer {
				if frames[3+i].Delta != tok {
					t.Fatalf("token %d: got %q, want %q", i, frames[3+i].Delta, tok)
				}
			}
			if done := frames[7].stored(t); done.ID != reply.ID || done.Response != reply.Response || done.Status != "completed" {
				t.Fatalf("chat.done: got %s, want %+v", frames[7].Message, reply.ChatMessage)
			}

			status, body = ts.do(t, "GET", "/api/todos", tok, nil)
			if list := decode[TodoList](t, body); status != http.StatusOK || list.Total != 1 || list.Todos[0].Title != "buy milk" {
				t.Fatalf("todos: got %d %s", status, body)
			}
			if hist := ts.chatHistory(t, tok, u.ID); len(hist) != 1 || hist[0].ID != reply.ID || hist[0].Response != reply.Response {
				t.Fatalf("history: got %+v", hist)
			}

			// What the model was sent: the system prompt, the message and
			// the five tools with their JSON schemas; then the tool result.
			reqs := llm.requests()
			if len(reqs) != 2 {
				t.Fatalf("model requests: got %d, want 2", len(reqs))
			}
			first := reqs[0]
			if !first.Stream || first.Model != "fake-model" || len(first.Messages) != 2 || first.Messages[0].Role != "system" ||
				first.Messages[1].Role != "user" || first.Messages[1].Content != "add buy milk" {
				t.Fatalf("first request: got %+v", first)
			}
			var names []string
			for _, tool := range first.Tools {
				names = append(names, tool.Function.Name)
				if tool.Type != "function" || !strings.Contains(string(tool.Function.Parameters), `"type":"object"`) {
					t.Fatalf("tool %s: got %+v", tool.Function.Name, tool)
				}
			}
			if got := strings.Join(names, ","); got != "add_task,list_tasks,complete_task,delete_task,update_task" {
				t.Fatalf("tools: got %s", got)
			}
			second := reqs[1]
			last := second.Messages[len(second.Messages)-1]
			asked := second.Messages[len(second.Messages)-2]
			if last.Role != "tool" || last.ToolCallID != "call_abc" || !strings.Contains(last.Content, `Created task \"buy milk\"`) ||
				len(asked.ToolCalls) != 1 || asked.ToolCalls[0].ID != "call_abc" || asked.ToolCalls[0].Function.Arguments != `{"title":"buy milk"}` {
				t.Fatalf("second request: got %+v", second.Messages)
			}

			// The next message sees the exchange as context.
			status, body = ts.do(t, "POST", "/api/chat", tok, map[string]any{"message": "what did I add?"})
			if status != http.StatusOK {
				t.Fatalf("second chat: got %d %s", status, body)
			}
			third := llm.requests()[2].Messages
			if len(third) != 4 || third[1].Content != "add buy milk" || third[2].Role != "assistant" ||
				third[2].Content != reply.Response || third[3].Content != "what did I add?" {
				t.Fatalf("context: got %+v", third)
			}
		})
	}
}

func TestChatSSE(t *testing.T) {
	llm := newFakeLLM(t, func(n int, req llmRequest) llmReply {
		if n == 1 {
			return llmReply{calls: []llmCall{{"call_1", "add_task", `{"title":"call mom"}`}}}
		}
		return llmReply{tokens: []string{"Added ", "call mom."}}
	})
	ts := startServer(t, "sqlite", llm.env())
	u, tok := ts.user(t)

	req, _ := http.NewRequest("POST", ts.URL+"/api/chat", strings.NewReader(`{"message":"add call mom"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("got %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events := readSSE(t, resp.Body)
	if got, want := types(events), "chat.started chat.tool chat.token chat.token chat.done"; got != want {
		t.Fatalf("events: got %s, want %s", got, want)
	}
	if tokens(events) != "Added call mom." {
		t.Fatalf("tokens: got %q", tokens(events))
	}
	done := events[len(events)-1].stored(t)
	if hist := ts.chatHistory(t, tok, u.ID); len(hist) != 1 || hist[0].ID != done.ID || done.Status != "completed" {
		t.Fatalf("history: got %+v, done %+v", hist, done)
	}
}

// readSSE reads "event: T\ndata: {...}\n\n" events until the body ends,
// checking that each event's name is its frame's type.
func readSSE(t testing.TB, body io.Reader) []chatFrameT {
	t.Helper()
	var out []chatFrameT
	var event string
	sc := bufio.NewScanner(body)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			f := decode[chatFrameT](t, []byte(strings.TrimPrefix(line, "data: ")))
			if f.Type != event {
				t.Fatalf("event %q carries a %q frame", event, f.Type)
			}
			out = append(out, f)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read SSE: %v", err)
	}
	return out
}

// TestChatProviderFailure: a provider that fails (mid-stream, with an
// error status, or by hanging past LLM_TIMEOUT) gives chat.error and a 502,
// and the exchange is stored as failed with no half-written answer.
func TestChatProviderFailure(t *testing.T) {
	tests := []struct {
		name    string
		reply   llmReply
		env     []string
		message string
	}{
		{"MidStream", llmReply{tokens: []string{"Sure, ", "I'll ", "add "}, abortAfter: 2}, nil, "the model provider failed"},
		{"ErrorStatus", llmReply{status: http.StatusInternalServerError}, nil, "the model provider failed (it answered HTTP 500)"},
		{"Timeout", llmReply{hang: true}, []string{"LLM_TIMEOUT", "1s"}, "the model did not answer within 1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			llm := newFakeLLM(t, func(int, llmRequest) llmReply { return tt.reply })
			ts := startServer(t, "sqlite", llm.env(tt.env...))
			u, tok := ts.user(t)
			ws := live(t, ts, tok)

			start := time.Now()
			status, body := ts.do(t, "POST", "/api/chat", tok, map[string]any{"message": "add milk"})
			if status != http.StatusBadGateway {
				t.Fatalf("got %d %s, want 502", status, body)
			}
			eb := decode[ErrorBody](t, body)
			if eb.Code != "bad_gateway" || !strings.Contains(eb.Detail, tt.message) {
				t.Fatalf("body: got %+v, want bad_gateway with %q", eb, tt.message)
			}
			if tt.name == "Timeout" && time.Since(start) > 5*time.Second {
				t.Fatalf("timeout took %v", time.Since(start))
			}
			frames := ws.chatUntilEnd()
			last := frames[len(frames)-1]
			if last.Type != "chat.error" || last.Code != "bad_gateway" || !strings.Contains(string(last.Message), tt.message) || last.ID != frames[0].ID {
				t.Fatalf("frames: got %s, last %+v", types(frames), last)
			}
			hist := ts.chatHistory(t, tok, u.ID)
			if len(hist) != 1 || hist[0].Status != "failed" || hist[0].Response != "" {
				t.Fatalf("history: got %+v, want one failed exchange without a response", hist)
			}
		})
	}
}

// TestChatProviderErrorHidesKey: a provider whose error body echoes the
// API key: the key reaches no client (502 body, SSE events, socket frames,
// stored exchange, history) and no log line; clients get a fixed sentence
// and a code, the log the redacted error with the provider's status.
func TestChatProviderErrorHidesKey(t *testing.T) {
	const key = "sk-live-9f8e7d6c5b4a3210FEDCBA9876543210"
	llm := newFakeLLM(t, func(int, llmRequest) llmReply { return llmReply{status: http.StatusUnauthorized, echoKey: true} })
	var logs syncBuffer
	ts := startServerLog(t, "postgres", llm.env("LLM_API_KEY", key), slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	u, tok := ts.user(t)
	ws := live(t, ts, tok)

	var seen []string
	status, body := ts.do(t, "POST", "/api/chat", tok, map[string]any{"message": "add milk"})
	if eb := decode[ErrorBody](t, body); status != http.StatusBadGateway || eb.Code != "bad_gateway" ||
		eb.Detail != "the model provider failed (it answered HTTP 401); try again later" {
		t.Fatalf("POST: got %d %s", status, body)
	}
	seen = append(seen, string(body))
	for _, f := range ws.chatUntilEnd() {
		data, _ := json.Marshal(f)
		seen = append(seen, string(data))
	}
	res, sse := roundTrip(t, ts, "POST", "/api/chat", tok, map[string]any{"message": "add milk"}, map[string]string{"Accept": "text/event-stream"})
	if events := readSSE(t, bytes.NewReader(sse)); res.StatusCode != http.StatusOK || len(events) == 0 || events[len(events)-1].Code != "bad_gateway" {
		t.Fatalf("SSE: got %d %s", res.StatusCode, sse)
	}
	seen = append(seen, string(sse))
	hist, _ := json.Marshal(ts.chatHistory(t, tok, u.ID))
	seen = append(seen, string(hist))
	ts.stop()
	seen = append(seen, logs.String())
	for _, s := range seen {
		if strings.Contains(s, key) || strings.Contains(s, key[8:24]) {
			t.Fatalf("the API key leaked: %s", s)
		}
	}
	if l := logs.String(); !strings.Contains(l, `"msg":"chat model failed"`) || !strings.Contains(l, "status code: 401") || !strings.Contains(l, "[redacted]") {
		t.Fatalf("logs: want the redacted provider error, got %s", l)
	}
}

// TestChatDeletedUser: once the user row is gone (deleted behind the
// server's back, as Better Auth would), a chat or auth frame on the user's
// open sockets closes them (3502) and runs nothing; a chat that was running
// when the user was deleted ends with chat.error unauthorized; no exchange
// is stored for the user.
func TestChatDeletedUser(t *testing.T) {
	gate := make(chan struct{})
	llm := newFakeLLM(t, func(int, llmRequest) llmReply {
		return llmReply{tokens: []string{"one ", "two"}, gateAfter: 1, gate: gate}
	})
	ts := startServer(t, "postgres", llm.env())
	u, tok := ts.user(t)
	asker, chatter, renewer := live(t, ts, tok), live(t, ts, tok), live(t, ts, tok)

	asker.send(map[string]string{"type": "chat", "message": "count", "id": "running"})
	asker.expectChat("chat.started")
	asker.expectChat("chat.token")
	deleteUserRow(t, ts, u.ID)
	close(gate)
	for {
		f := asker.readChat()
		if f.Type == "chat.done" {
			t.Fatalf("the running chat was stored: %s", f.Message)
		}
		if f.Type == "chat.error" {
			if f.Code != store.CodeUnauthorized || f.ID != "running" {
				t.Fatalf("running chat: got %+v, want chat.error unauthorized", f)
			}
			break
		}
	}

	chatter.send(map[string]string{"type": "chat", "message": "count", "id": "after"})
	chatter.expectClose(realtime.CloseForbidden, 10*time.Second)
	renewer.send(map[string]string{"type": "auth", "token": tok})
	renewer.expectClose(realtime.CloseForbidden, 10*time.Second)

	var n int
	pool := ts.srv.db.(*boundedDB).Unwrap().(*postgres.DB).Pool()
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM chat_messages WHERE user_id = $1`, u.ID).Scan(&n); err != nil || n != 0 {
		t.Fatalf("chat_messages of the deleted user: got %d (%v), want 0", n, err)
	}
	if got := len(llm.requests()); got != 1 {
		t.Fatalf("model requests: got %d, want 1 (the chat after the delete must not run)", got)
	}
}

// TestChatCancel: cancel {id} mid-stream aborts the model request and
// stores the partial answer as cancelled.
func TestChatCancel(t *testing.T) {
	gate := make(chan struct{})
	defer close(gate)
	llm := newFakeLLM(t, func(int, llmRequest) llmReply {
		return llmReply{tokens: []string{"Here ", "is ", "a ", "long ", "answer."}, gateAfter: 2, gate: gate}
	})
	ts := startServer(t, "sqlite", llm.env())
	u, tok := ts.user(t)
	ws := live(t, ts, tok)

	ws.send(map[string]string{"type": "chat", "message": "tell me everything", "id": "c-1"})
	if f := ws.expectChat("chat.started"); f.ID != "c-1" {
		t.Fatalf("started: got %+v", f)
	}
	ws.expectChat("chat.token")
	ws.expectChat("chat.token")
	ws.send(map[string]string{"type": "cancel", "id": "c-1"})
	done := ws.expectChat("chat.done")
	msg := done.stored(t)
	if done.ID != "c-1" || msg.Status != "cancelled" || msg.Response != "Here is " {
		t.Fatalf("done: got %+v %s", done, done.Message)
	}
	select {
	case n := <-llm.cancelled:
		if n != 1 {
			t.Fatalf("cancelled request %d", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the model request was not cancelled")
	}
	if hist := ts.chatHistory(t, tok, u.ID); len(hist) != 1 || hist[0].Status != "cancelled" || hist[0].Response != "Here is " {
		t.Fatalf("history: got %+v", hist)
	}
	ws.send(map[string]string{"type": "cancel", "id": "c-1"})
	if f := ws.readChat(); f.Type != "error" || f.Code != store.CodeNotFound {
		t.Fatalf("cancel of a finished chat: got %+v", f)
	}
}

// TestChatSocketClosedMidAnswer: the answer outlives the socket that asked.
func TestChatSocketClosedMidAnswer(t *testing.T) {
	gate := make(chan struct{})
	llm := newFakeLLM(t, func(int, llmRequest) llmReply {
		return llmReply{tokens: []string{"one ", "two ", "three"}, gateAfter: 1, gate: gate}
	})
	ts := startServer(t, "sqlite", llm.env())
	_, tok := ts.user(t)
	asker, other := live(t, ts, tok), live(t, ts, tok)

	asker.send(map[string]string{"type": "chat", "message": "count", "id": "x"})
	asker.expectChat("chat.started")
	asker.expectChat("chat.token")
	asker.conn.Close()
	close(gate)
	frames := other.chatUntilEnd()
	if got := types(frames); got != "chat.started chat.token chat.token chat.token chat.done" {
		t.Fatalf("other socket: got %s", got)
	}
	if msg := frames[len(frames)-1].stored(t); msg.Status != "completed" || msg.Response != "one two three" {
		t.Fatalf("done: got %+v", msg)
	}
	select {
	case n := <-llm.cancelled:
		t.Fatalf("request %d was cancelled", n)
	default:
	}
}

// TestChatInvalidToolArguments: the model gets the tool's error text in
// the next request and recovers.
func TestChatInvalidToolArguments(t *testing.T) {
	llm := newFakeLLM(t, func(n int, req llmRequest) llmReply {
		switch n {
		case 1:
			return llmReply{calls: []llmCall{{"call_1", "add_task", `{"name":"buy milk"}`}}}
		case 2:
			if res := req.toolResults(); len(res) != 1 || !strings.Contains(res[0], "title is required") {
				return llmReply{tokens: []string{fmt.Sprintf("no error seen: %q", res)}}
			}
			return llmReply{calls: []llmCall{{"call_2", "add_task", `{"title":"buy milk"}`}}}
		}
		return llmReply{tokens: []string{"Added buy milk."}}
	})
	ts := startServer(t, "sqlite", llm.env())
	_, tok := ts.user(t)
	status, body := ts.do(t, "POST", "/api/chat", tok, map[string]any{"message": "add buy milk"})
	if status != http.StatusOK {
		t.Fatalf("got %d %s", status, body)
	}
	reply := decode[ChatReply](t, body)
	calls := toolCallsOf(t, reply.ChatMessage)
	if reply.Response != "Added buy milk." || len(calls) != 2 || !strings.Contains(calls[0].Error, "title is required") ||
		calls[0].Result != nil || calls[1].Error != "" {
		t.Fatalf("reply: got %s", body)
	}
	status, body = ts.do(t, "GET", "/api/todos", tok, nil)
	if list := decode[TodoList](t, body); list.Total != 1 || list.Todos[0].Title != "buy milk" {
		t.Fatalf("todos: got %d %s", status, body)
	}
}

// TestChatStepCap: a model that always asks for a tool is stopped after
// CHAT_MAX_STEPS model calls, with a message saying so.
func TestChatStepCap(t *testing.T) {
	llm := newFakeLLM(t, func(n int, req llmRequest) llmReply {
		return llmReply{calls: []llmCall{{fmt.Sprintf("call_%d", n), "list_tasks", `{}`}}}
	})
	ts := startServer(t, "sqlite", llm.env("CHAT_MAX_STEPS", "3"))
	_, tok := ts.user(t)
	status, body := ts.do(t, "POST", "/api/chat", tok, map[string]any{"message": "loop forever"})
	if status != http.StatusOK {
		t.Fatalf("got %d %s", status, body)
	}
	reply := decode[ChatReply](t, body)
	if n := len(llm.requests()); n != 3 {
		t.Fatalf("model calls: got %d, want 3", n)
	}
	if calls := toolCallsOf(t, reply.ChatMessage); len(calls) != 2 || !strings.Contains(reply.Response, "more than 3 steps") || reply.Status != "completed" {
		t.Fatalf("reply: got %s", body)
	}
}

// TestChatBuiltinOverWS: the default agent, offline, end to end: chat
// frame, tool, todo frames, tokens, chat.done; then done with / rename /
// delete by a fragment of the title.
func TestChatBuiltinOverWS(t *testing.T) {
	ts := startServer(t, "sqlite", nil)
	u, tok := ts.user(t)
	ws := live(t, ts, tok)

	chat := func(msg string) []chatFrameT {
		t.Helper()
		ws.send(map[string]string{"type": "chat", "message": msg})
		return ws.chatUntilEnd()
	}
	frames := chat("add buy milk: 2 litres")
	if got := types(frames); !strings.HasPrefix(got, "chat.started todo.created chat.tool chat.token chat.token") || !strings.HasSuffix(got, "chat.done") {
		t.Fatalf("frames: got %s", got)
	}
	todo := frames[1].Todo
	if todo.Title != "buy milk" || todo.Description == nil || *todo.Description != "2 litres" {
		t.Fatalf("todo: got %+v", todo)
	}
	if got := tokens(frames); got != "Added “buy milk” to your list, with the note “2 litres”." {
		t.Fatalf("answer: got %q", got)
	}
	ts.createTodo(t, tok, "call mom")
	ws.expectChat("todo.created")

	frames = chat("done with milk")
	if got := types(frames); !strings.HasPrefix(got, "chat.started chat.tool todo.updated chat.tool chat.token") {
		t.Fatalf("frames: got %s", got)
	}
	if f := frames[2]; f.Todo.ID != todo.ID || !f.Todo.IsComplete {
		t.Fatalf("todo.updated: got %+v", f)
	}
	if got := tokens(frames); got != "Marked “buy milk” as done." {
		t.Fatalf("answer: got %q", got)
	}
	if got := tokens(chat("rename milk to oat milk")); got != "Renamed “buy milk” to “oat milk”." {
		t.Fatalf("rename: got %q", got)
	}
	frames = chat("what's on my list?")
	if got := tokens(frames); got != "You have 2 tasks:\n- call mom\n- oat milk (done)" {
		t.Fatalf("list: got %q", got)
	}
	if got := tokens(chat("delete oat")); got != "Deleted “oat milk”." {
		t.Fatalf("delete: got %q", got)
	}
	if hist := ts.chatHistory(t, tok, u.ID); len(hist) != 5 || hist[0].Message != "delete oat" || hist[4].Message != "add buy milk: 2 litres" {
		t.Fatalf("history: got %+v", hist)
	}
}

// TestChatHistoryIsOwnersOnly: another user's id is 404 with the body of
// a user that does not exist; limit and before page the history.
func TestChatHistoryIsOwnersOnly(t *testing.T) {
	ts := startServer(t, "sqlite", nil)
	a, aTok := ts.user(t)
	_, bTok := ts.user(t)
	for _, msg := range []string{"add one", "add two", "add three"} {
		if status, body := ts.do(t, "POST", "/api/chat", aTok, map[string]string{"message": msg}); status != http.StatusOK {
			t.Fatalf("chat: got %d %s", status, body)
		}
	}
	status, theirs := ts.do(t, "GET", "/api/chat/"+a.ID, bTok, nil)
	_, missing := ts.do(t, "GET", "/api/chat/NOSUCHUSER0000000000000000000000", bTok, nil)
	if status != http.StatusNotFound || string(theirs) != string(missing) {
		t.Fatalf("another user's history: got %d %s, want 404 %s", status, theirs, missing)
	}
	if status, _ := ts.do(t, "GET", "/api/chat/"+a.ID, "", nil); status != http.StatusUnauthorized {
		t.Fatalf("no token: got %d", status)
	}

	page := ts.chatHistory(t, aTok, a.ID+"?limit=2")
	if len(page) != 2 || page[0].Message != "add three" || page[1].Message != "add two" {
		t.Fatalf("first page: got %+v", page)
	}
	rest := ts.chatHistory(t, aTok, a.ID+"?limit=2&before="+page[1].CreatedAt.Format(time.RFC3339Nano))
	if len(rest) != 1 || rest[0].Message != "add one" {
		t.Fatalf("second page: got %+v", rest)
	}
	for _, q := range []string{"?limit=0", "?limit=101", "?before=yesterday"} {
		if status, body := ts.do(t, "GET", "/api/chat/"+a.ID+q, aTok, nil); status != http.StatusUnprocessableEntity {
			t.Fatalf("%s: got %d %s", q, status, body)
		}
	}
}

func TestChatValidation(t *testing.T) {
	ts := startServer(t, "sqlite", nil)
	_, tok := ts.user(t)
	tests := []struct {
		name   string
		body   any
		status int
		field  string
	}{
		{"Missing", map[string]any{}, http.StatusUnprocessableEntity, "message"},
		{"Empty", map[string]any{"message": "  "}, http.StatusUnprocessableEntity, "message"},
		{"TooLong", map[string]any{"message": strings.Repeat("é", 4001)}, http.StatusUnprocessableEntity, "message"},
		{"NotAString", map[string]any{"message": 5}, http.StatusUnprocessableEntity, "message"},
		{"ConversationIDObject", map[string]any{"message": "hi", "conversation_id": map[string]int{}}, http.StatusUnprocessableEntity, "conversation_id"},
		{"MalformedJSON", `{"message":`, http.StatusBadRequest, ""},
		{"LongestOK", map[string]any{"message": strings.Repeat("é", 4000), "conversation_id": "abc"}, http.StatusOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := ts.do(t, "POST", "/api/chat", tok, tt.body)
			if status != tt.status {
				t.Fatalf("got %d %s, want %d", status, body, tt.status)
			}
			if tt.field != "" {
				if eb := decode[ErrorBody](t, body); eb.Field != tt.field {
					t.Fatalf("field: got %+v, want %s", eb, tt.field)
				}
			}
		})
	}

	ws := live(t, ts, tok)
	ws.send(map[string]any{"type": "chat", "message": "", "id": "e1"})
	if f := ws.expectChat("chat.error"); f.ID != "e1" || f.Code != store.CodeInvalid {
		t.Fatalf("empty chat frame: got %+v", f)
	}
	ws.send(map[string]any{"type": "cancel"})
	if f := ws.expectChat("error"); f.Code != store.CodeBadRequest {
		t.Fatalf("cancel without id: got %+v", f)
	}
}

// TestChatRateLimit: CHAT_RATE_LIMIT per user per minute, over REST (429
// with Retry-After) and WebSocket (chat.error rate_limited); another user
// is not affected.
func TestChatRateLimit(t *testing.T) {
	ts := startServer(t, "sqlite", map[string]string{"CHAT_RATE_LIMIT": "2"})
	_, tok := ts.user(t)
	_, otherTok := ts.user(t)
	for range 2 {
		if status, body := ts.do(t, "POST", "/api/chat", tok, map[string]string{"message": "list"}); status != http.StatusOK {
			t.Fatalf("got %d %s", status, body)
		}
	}
	req, _ := http.NewRequest("POST", ts.URL+"/api/chat", strings.NewReader(`{"message":"list"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if eb := decode[ErrorBody](t, body); resp.StatusCode != http.StatusTooManyRequests || eb.Code != store.CodeRateLimited || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third message: got %d %s (Retry-After %q)", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	ws := live(t, ts, tok)
	ws.send(map[string]string{"type": "chat", "message": "list", "id": "r"})
	if f := ws.expectChat("chat.error"); f.Code != store.CodeRateLimited || f.ID != "r" {
		t.Fatalf("frame: got %+v", f)
	}
	if status, body := ts.do(t, "POST", "/api/chat", otherTok, map[string]string{"message": "list"}); status != http.StatusOK {
		t.Fatalf("other user: got %d %s", status, body)
	}
}

// TestChatToolWritesAreLimited: a model that asks for 300 add_task calls
// in one step gets CHAT_MAX_TOOL_CALLS of them run, and those draw on the
// user's RATE_LIMIT_WRITES budget like REST writes: over it the model sees
// rate_limited results, nothing more is written, and REST is 429 too.
func TestChatToolWritesAreLimited(t *testing.T) {
	const asked = 300
	var calls []llmCall
	for i := range asked {
		calls = append(calls, llmCall{fmt.Sprintf("call_%d", i), "add_task", fmt.Sprintf(`{"title":"task %d"}`, i)})
	}
	llm := newFakeLLM(t, func(n int, req llmRequest) llmReply {
		if n == 1 {
			return llmReply{calls: calls}
		}
		return llmReply{tokens: []string{"Done."}}
	})
	ts := startServer(t, "postgres", llm.env("RATE_LIMIT_WRITES", "7", "CHAT_MAX_TOOL_CALLS", "10"))
	_, tok := ts.user(t)

	status, body := ts.do(t, "POST", "/api/chat", tok, map[string]any{"message": "add 300 tasks"})
	if status != http.StatusOK {
		t.Fatalf("chat: got %d %s", status, body)
	}
	got := toolCallsOf(t, decode[ChatReply](t, body).ChatMessage)
	if len(got) != asked {
		t.Fatalf("tool calls: got %d, want %d", len(got), asked)
	}
	for i, c := range got {
		switch {
		case i < 7 && c.Error != "":
			t.Fatalf("call %d: got error %q, want it run", i, c.Error)
		case i >= 7 && i < 10 && !strings.HasPrefix(c.Error, "rate_limited: too many writes"):
			t.Fatalf("call %d: got %+v, want the write limit's error", i, c)
		case i >= 10 && !strings.HasPrefix(c.Error, "rate_limited: at most 10 tool calls run per step"):
			t.Fatalf("call %d: got %+v, want the per-step cap's error", i, c)
		}
	}
	// The model was told, call by call.
	results := llm.requests()[1].toolResults()
	if len(results) != asked || !strings.Contains(results[7], "too many writes") || !strings.Contains(results[asked-1], "did not run") {
		t.Fatalf("tool results sent to the model: got %d, [7] %s", len(results), results[7])
	}
	status, body = ts.do(t, "GET", "/api/todos", tok, nil)
	if list := decode[TodoList](t, body); status != http.StatusOK || list.Total != 7 {
		t.Fatalf("todos: got %d %s, want 7 todos", status, body)
	}
	if status, body := ts.do(t, "POST", "/api/todos", tok, map[string]string{"title": "one more"}); status != http.StatusTooManyRequests {
		t.Fatalf("REST write after the chat's: got %d %s, want 429 (one budget)", status, body)
	}
}

// TestChatAcrossReplicas: POST /api/chat on replica A streams to the
// user's socket on replica B; the rate limit is shared through Redis.
func TestChatAcrossReplicas(t *testing.T) {
	js := newJWKSServer(t)
	env := map[string]string{"DATABASE_URL": storetest.PostgresURL(t), "REDIS_URL": redisURL(t), "CHAT_RATE_LIMIT": "3"}
	a, b := startReplica(t, js, "postgres", env), startReplica(t, js, "postgres", env)
	_, tok := a.user(t)
	onB := live(t, b, tok)

	status, body := a.do(t, "POST", "/api/chat", tok, map[string]string{"message": "add buy milk"})
	if status != http.StatusOK {
		t.Fatalf("got %d %s", status, body)
	}
	reply := decode[ChatReply](t, body)
	frames := onB.chatUntilEnd()
	if got := types(frames); !strings.HasPrefix(got, "chat.started todo.created chat.tool chat.token") || !strings.HasSuffix(got, "chat.done") {
		t.Fatalf("on B: got %s", got)
	}
	if tokens(frames) != reply.Response || frames[len(frames)-1].stored(t).ID != reply.ID {
		t.Fatalf("on B: got %q, want %q", tokens(frames), reply.Response)
	}
	if status, body := b.do(t, "POST", "/api/chat", tok, map[string]string{"message": "list"}); status != http.StatusOK {
		t.Fatalf("second on B: got %d %s", status, body)
	}
	onB.chatUntilEnd()
	if status, body := a.do(t, "POST", "/api/chat", tok, map[string]string{"message": "list"}); status != http.StatusOK {
		t.Fatalf("third on A: got %d %s", status, body)
	}
	onB.chatUntilEnd()
	if status, body := b.do(t, "POST", "/api/chat", tok, map[string]string{"message": "list"}); status != http.StatusTooManyRequests {
		t.Fatalf("fourth on B: got %d %s, want 429 (shared limit)", status, body)
	}
}

func TestChatConfig(t *testing.T) {
	t.Run("Defaults", func(t *testing.T) {
		cfg, err := LoadConfig(getenv(nil))
		if err != nil {
			t.Fatal(err)
		}
		got := fmt.Sprint(cfg.LLMProvider, cfg.LLMBaseURL, cfg.LLMModel, cfg.LLMTimeout, cfg.ChatMaxSteps, cfg.ChatMaxToolCalls, cfg.ChatHistory, cfg.ChatRateLimit)
		if want := fmt.Sprint("builtin", "", "", time.Minute, 5, 10, 10, 20); got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
	})
	bad := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"ProductionOpenAINeedsURLAndModel",
			map[string]string{"ENVIRONMENT": "production", "BETTER_AUTH_URL": "https://auth.example", "LLM_PROVIDER": "openai"},
			[]string{"LLM_BASE_URL", "LLM_MODEL"}},
		{"ProductionOllamaNeedsModel",
			map[string]string{"ENVIRONMENT": "production", "BETTER_AUTH_URL": "https://auth.example", "LLM_PROVIDER": "ollama", "LLM_BASE_URL": "http://ollama:11434"},
			[]string{"LLM_MODEL"}},
		{"UnknownProvider", map[string]string{"LLM_PROVIDER": "gpt"}, []string{"LLM_PROVIDER"}},
		{"BadURL", map[string]string{"LLM_PROVIDER": "openai", "LLM_BASE_URL": "localhost:8080"}, []string{"LLM_BASE_URL"}},
		{"Limits", map[string]string{"LLM_TIMEOUT": "0s", "CHAT_MAX_STEPS": "0", "CHAT_MAX_TOOL_CALLS": "0", "CHAT_HISTORY": "-1", "CHAT_RATE_LIMIT": "0"},
			[]string{"LLM_TIMEOUT", "CHAT_MAX_STEPS", "CHAT_MAX_TOOL_CALLS", "CHAT_HISTORY", "CHAT_RATE_LIMIT"}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadConfig(getenv(tt.env))
			if err == nil {
				t.Fatal("got no error")
			}
			for _, name := range tt.want {
				if !strings.Contains(err.Error(), name) {
					t.Errorf("got %q, want it to name %s", err, name)
				}
			}
		})
	}
}

// TestChatLLMStartupCheck: in production a network provider must answer
// at start-up, and take the key.
func TestChatLLMStartupCheck(t *testing.T) {
	endpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer good" {
			http.Error(w, `{"error":{"message":"bad key"}}`, http.StatusUnauthorized)
			return
		}
		w.Write([]byte(`{"object":"list","data":[]}`))
	}))
	defer endpoint.Close()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := "http://" + ln.Addr().String()
	ln.Close()
	tests := []struct {
		name, url, key, want string
	}{
		{"OK", endpoint.URL, "good", ""},
		{"KeyRejected", endpoint.URL, "bad", "LLM_API_KEY"},
		{"Unreachable", closed, "good", "LLM_BASE_URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Environment: "production", LLMProvider: "openai", LLMBaseURL: tt.url, LLMAPIKey: tt.key, LLMModel: "m"}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := openModel(ctx, cfg, storetest.Quiet())
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("got %v", err)
			case tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.want)):
				t.Fatalf("got %v, want an error naming %s", err, tt.want)
			}
		})
	}
}
