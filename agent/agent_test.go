package agent

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
)

// recordSink keeps what a run sends.
type recordSink struct {
	mu     sync.Mutex
	tokens []string
	tools  []ToolCall
}

func (s *recordSink) Token(d string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = append(s.tokens, d)
}

func (s *recordSink) Tool(c ToolCall) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tools = append(s.tools, c)
}

func TestAgentToolCallChunk(t *testing.T) {
	tests := []struct {
		name  string
		chunk string
		want  bool
	}{
		{"ToolCallHead", `[{"id":"call_1","type":"function","function":{"name":"add_task","arguments":""}}]`, true},
		{"ArgumentsFragment", `[{"type":"","function":{"name":"","arguments":"{\"ti"}}]`, true},
		{"LegacyFunctionCall", `{"name":"add_task","arguments":"{}"}`, true},
		{"Word", "Added ", false},
		{"Bracket", "[", false},
		{"JSONArrayText", `[1, 2, 3]`, false},
		{"JSONObjectText", `{"title":"buy milk"}`, false},
		{"ArrayOfOtherObjects", `[{"function":"x","extra":1}]`, false},
		{"MarkdownLink", "[milk](http://x)", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := isToolCallChunk([]byte(tt.chunk)); got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAgentWords(t *testing.T) {
	for _, s := range []string{"", "one", "one two", "Here:\n- a\n- b", "  lead", "trail  ", "a  b\n\nc"} {
		if got := words(s); strings.Join(got, "") != s {
			t.Fatalf("words(%q) = %q: does not join back", s, got)
		}
	}
	if got := words("Added “buy milk”."); !slices.Equal(got, []string{"Added ", "“buy ", "milk”."}) {
		t.Fatalf("got %q", got)
	}
}

func TestAgentArgumentsJSON(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "{}"},
		{`{"title":"x"}`, `{"title":"x"}`},
		{`{"title":`, `"{\"title\":"`},
	}
	for _, tt := range tests {
		if got := string(argumentsJSON(tt.in)); got != tt.want {
			t.Fatalf("argumentsJSON(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// TestAgentRunnerCancelled: a cancelled context ends the run with its error.
func TestAgentRunnerCancelled(t *testing.T) {
	e := newBuiltinEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := e.runner.Run(ctx, Request{UserID: e.a, Message: "add buy milk"}, &recordSink{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if got := e.state(t, e.a); len(got) != 0 {
		t.Fatalf("list: got %q", got)
	}
}

// TestAgentRunnerNoUser: without a user no tool runs (the model cannot
// name one).
func TestAgentRunnerNoUser(t *testing.T) {
	e := newBuiltinEnv(t)
	reply, err := e.runner.Run(context.Background(), Request{Message: "add buy milk"}, &recordSink{})
	if err != nil {
		t.Fatal(err)
	}
	if len(reply.ToolCalls) != 1 || !strings.HasPrefix(reply.ToolCalls[0].Error, "unauthorized") || !strings.Contains(reply.Text, "couldn't add") {
		t.Fatalf("got %+v", reply)
	}
}

// TestAgentToolCallRecord: tool calls are recorded as clients see them.
func TestAgentToolCallRecord(t *testing.T) {
	e := newBuiltinEnv(t)
	reply, _ := e.chat(t, e.a, "add buy milk")
	data, err := json.Marshal(reply.ToolCalls)
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]json.RawMessage
	json.Unmarshal(data, &got)
	if len(got) != 1 || string(got[0]["name"]) != `"add_task"` || string(got[0]["arguments"]) != `{"title":"buy milk"}` ||
		!strings.Contains(string(got[0]["result"]), `"status":"created"`) || got[0]["error"] != nil {
		t.Fatalf("got %s", data)
	}
}
