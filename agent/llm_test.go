package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// sseServer is a real OpenAI-compatible endpoint answering the n-th chat
// completion request with the SSE body script(n, request body).
type sseServer struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []map[string]any
}

func newSSEServer(t *testing.T, script func(n int, body map[string]any) string) *sseServer {
	t.Helper()
	s := &sseServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/chat/completions" {
			http.NotFound(w, r)
			return
		}
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		s.mu.Lock()
		s.bodies = append(s.bodies, body)
		n := len(s.bodies)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, script(n, body))
	}))
	t.Cleanup(s.Close)
	return s
}

// sseChunk is one "data:" line with a delta and a finish reason ("" for null).
func sseChunk(delta string, finish string) string {
	f := "null"
	if finish != "" {
		f = `"` + finish + `"`
	}
	return `data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":` + delta + `,"finish_reason":` + f + "}]}\n\n"
}

func sseText(tokens ...string) string {
	var b strings.Builder
	for _, tok := range tokens {
		d, _ := json.Marshal(map[string]string{"content": tok})
		b.WriteString(sseChunk(string(d), ""))
	}
	return b.String()
}

// sseToolCall streams a tool call as OpenAI does: id, type and name, then
// the arguments in pieces.
func sseToolCall(index int, id, name string, args ...string) string {
	head, _ := json.Marshal(map[string]any{"tool_calls": []any{map[string]any{"index": index, "id": id, "type": "function",
		"function": map[string]string{"name": name, "arguments": ""}}}})
	out := sseChunk(string(head), "")
	for _, a := range args {
		d, _ := json.Marshal(map[string]any{"tool_calls": []any{map[string]any{"index": index, "function": map[string]string{"arguments": a}}}})
		out += sseChunk(string(d), "")
	}
	return out
}

const sseDone = "data: [DONE]\n\n"

func openAIRunner(t *testing.T, e *builtinEnv, url string, cfg Config) *Runner {
	t.Helper()
	model, err := NewModel(ProviderConfig{Provider: ProviderOpenAI, BaseURL: url + "/v1", Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	return NewRunner(model, Tools(e.todos), cfg, nil)
}

// TestLLMOpenAIToolLoop: text before tool calls, two tool calls streamed
// in fragments in one response, their results fed back, then the answer;
// no tool-call JSON reaches the sink.
func TestLLMOpenAIToolLoop(t *testing.T) {
	srv := newSSEServer(t, func(n int, body map[string]any) string {
		if n == 1 {
			return sseText("Let me ", "add them.") +
				sseToolCall(0, "call_a", "add_task", `{"tit`, `le":"buy`, ` milk"}`) +
				sseToolCall(1, "call_b", "add_task", `{"title":`, `"call mom"}`) +
				sseChunk(`{}`, "tool_calls") + sseDone
		}
		msgs, _ := json.Marshal(body["messages"])
		if !strings.Contains(string(msgs), `"tool_call_id":"call_a"`) || !strings.Contains(string(msgs), `"tool_call_id":"call_b"`) {
			return sseText("missing tool results: "+string(msgs)) + sseChunk(`{}`, "stop") + sseDone
		}
		return sseText("Added ", "both.") + sseChunk(`{}`, "stop") + sseDone
	})
	e := newBuiltinEnv(t)
	sink := &recordSink{}
	reply, err := openAIRunner(t, e, srv.URL, Config{}).Run(context.Background(), Request{UserID: e.a, Message: "add buy milk and call mom"}, sink)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"Let me ", "add them.", "\n\nAdded ", "both."}; strings.Join(sink.tokens, "|") != strings.Join(want, "|") {
		t.Fatalf("tokens: got %q, want %q", sink.tokens, want)
	}
	if reply.Text != "Let me add them.\n\nAdded both." || reply.Steps != 2 || len(reply.ToolCalls) != 2 {
		t.Fatalf("reply: got %+v", reply)
	}
	if got := e.state(t, e.a); strings.Join(got, ",") != "buy milk,call mom" {
		t.Fatalf("list: got %q", got)
	}
}

// TestLLMOpenAIFailures: a stream that ends without a finish reason, and
// an error status, are ModelErrors; an unknown tool is an error the model
// is told about.
func TestLLMOpenAIFailures(t *testing.T) {
	e := newBuiltinEnv(t)
	t.Run("Unfinished", func(t *testing.T) {
		srv := newSSEServer(t, func(int, map[string]any) string { return sseText("Half an ") })
		reply, err := openAIRunner(t, e, srv.URL, Config{}).Run(context.Background(), Request{UserID: e.a, Message: "hi"}, &recordSink{})
		var me *ModelError
		if !errors.As(err, &me) || !errors.Is(err, errUnfinished) || reply.Text != "Half an " {
			t.Fatalf("got %v (%+v)", err, reply)
		}
	})
	t.Run("Status", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, `{"error":{"message":"model overloaded"}}`, http.StatusServiceUnavailable)
		}))
		defer srv.Close()
		_, err := openAIRunner(t, e, srv.URL, Config{}).Run(context.Background(), Request{UserID: e.a, Message: "hi"}, &recordSink{})
		var me *ModelError
		if !errors.As(err, &me) || !strings.Contains(err.Error(), "model overloaded") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("UnknownTool", func(t *testing.T) {
		srv := newSSEServer(t, func(n int, body map[string]any) string {
			if n == 1 {
				return sseToolCall(0, "call_x", "fly_to_moon", `{}`) + sseChunk(`{}`, "tool_calls") + sseDone
			}
			msgs, _ := json.Marshal(body["messages"])
			if !strings.Contains(string(msgs), "there is no tool") {
				return sseText("not told") + sseChunk(`{}`, "stop") + sseDone
			}
			return sseText("I can't fly.") + sseChunk(`{}`, "stop") + sseDone
		})
		reply, err := openAIRunner(t, e, srv.URL, Config{}).Run(context.Background(), Request{UserID: e.a, Message: "fly"}, &recordSink{})
		if err != nil || reply.Text != "I can't fly." || len(reply.ToolCalls) != 1 || !strings.HasPrefix(reply.ToolCalls[0].Error, "invalid: there is no tool") {
			t.Fatalf("got %v %+v", err, reply)
		}
	})
	t.Run("StepCap", func(t *testing.T) {
		srv := newSSEServer(t, func(n int, _ map[string]any) string {
			return sseToolCall(0, fmt.Sprint("call_", n), "list_tasks", `{}`) + sseChunk(`{}`, "tool_calls") + sseDone
		})
		reply, err := openAIRunner(t, e, srv.URL, Config{MaxSteps: 2}).Run(context.Background(), Request{UserID: e.a, Message: "loop"}, &recordSink{})
		if err != nil || !reply.Capped || reply.Steps != 2 || len(reply.ToolCalls) != 1 || !strings.Contains(reply.Text, "more than 2 steps") {
			t.Fatalf("got %v %+v", err, reply)
		}
	})
}

func TestLLMProviderConfig(t *testing.T) {
	tests := []struct {
		name                string
		in                  ProviderConfig
		wantBase, wantModel string
	}{
		{"OpenAIDefaults", ProviderConfig{Provider: ProviderOpenAI}, DefaultOpenAIBaseURL, DefaultOpenAIModel},
		{"OllamaDefaults", ProviderConfig{Provider: ProviderOllama}, "http://localhost:11434/v1", DefaultOllamaModel},
		{"OllamaServer", ProviderConfig{Provider: ProviderOllama, BaseURL: "http://gpu:11434/", Model: "qwen3"}, "http://gpu:11434/v1", "qwen3"},
		{"OllamaV1", ProviderConfig{Provider: ProviderOllama, BaseURL: "http://gpu:11434/v1"}, "http://gpu:11434/v1", DefaultOllamaModel},
		{"OpenAITrailingSlash", ProviderConfig{Provider: ProviderOpenAI, BaseURL: "http://x/v1/", Model: "m"}, "http://x/v1", "m"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.in.withDefaults()
			if got.BaseURL != tt.wantBase || got.Model != tt.wantModel {
				t.Fatalf("got %s %s, want %s %s", got.BaseURL, got.Model, tt.wantBase, tt.wantModel)
			}
			if _, err := NewModel(tt.in); err != nil {
				t.Fatal(err)
			}
		})
	}
	if m, err := NewModel(ProviderConfig{}); err != nil || m != (Builtin{}) {
		t.Fatalf("default: got %T %v", m, err)
	}
	if _, err := NewModel(ProviderConfig{Provider: "gpt"}); err == nil {
		t.Fatal("unknown provider: got no error")
	}
}

func TestLLMPing(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path != "/v1/models":
			http.NotFound(w, r)
		case r.Header.Get("Authorization") != "Bearer k":
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	if err := Ping(ctx, ProviderConfig{Provider: ProviderOpenAI, BaseURL: srv.URL + "/v1", APIKey: "k"}); err != nil {
		t.Fatalf("ok: got %v", err)
	}
	if err := Ping(ctx, ProviderConfig{Provider: ProviderOllama, BaseURL: srv.URL, APIKey: "k"}); err != nil {
		t.Fatalf("ollama: got %v", err)
	}
	if err := Ping(ctx, ProviderConfig{Provider: ProviderOpenAI, BaseURL: srv.URL + "/v1", APIKey: "bad"}); !errors.Is(err, ErrKeyRejected) {
		t.Fatalf("bad key: got %v", err)
	}
	if err := Ping(ctx, ProviderConfig{}); err != nil {
		t.Fatalf("builtin: got %v", err)
	}
}

// TestLLMRedact: what a provider's error text may carry of a credential
// does not reach the log, and the text is cut.
func TestLLMRedact(t *testing.T) {
	const key = "my-own-key-42"
	tests := []struct{ in, want string }{
		{"API returned unexpected status code: 401: Incorrect API key provided: my-own-key-42.",
			"API returned unexpected status code: 401: Incorrect API key provided: [redacted]."},
		{"bad header Authorization: Bearer abc.def", "bad header Authorization: Bearer [redacted]"},
		{"invalid x-api-key: gsk_0123456789abcdef", "invalid x-api-key: [redacted]"},
		{"key sk-proj-AbCdEf0123456789 rejected", "key [redacted] rejected"},
		{"token 0123456789abcdef0123456789abcdef0123 unknown", "token [redacted] unknown"},
		{"line one\n\tline\x00two", "line one line two"},
	}
	for _, tt := range tests {
		if got := Redact(tt.in, key); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := Redact(strings.Repeat("word ", 200), ""); len([]rune(got)) != maxErrorDetail+1 || !strings.HasSuffix(got, "…") {
		t.Errorf("long text: got %d characters", len([]rune(got)))
	}
}

// TestLLMProviderErrorIsPublic: a provider's error status reaches the
// client as a fixed sentence with the status; the log form keeps the
// (redacted) provider text.
func TestLLMProviderErrorIsPublic(t *testing.T) {
	e := newBuiltinEnv(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":{"message":"bad key `+r.Header.Get("Authorization")+`"}}`, http.StatusUnauthorized)
	}))
	defer srv.Close()
	model, err := NewModel(ProviderConfig{Provider: ProviderOpenAI, BaseURL: srv.URL + "/v1", Model: "m", APIKey: "k-12345"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewRunner(model, Tools(e.todos), Config{}, nil).Run(context.Background(), Request{UserID: e.a, Message: "hi"}, &recordSink{})
	var me *ModelError
	if !errors.As(err, &me) || me.Public() != "the model provider failed (it answered HTTP 401); try again later" ||
		strings.Contains(me.Error(), "k-12345") || !strings.Contains(me.Error(), "bad key Bearer [redacted]") {
		t.Fatalf("got %v / %v", err, me)
	}
}
