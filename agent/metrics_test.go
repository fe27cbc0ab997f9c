package agent

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tmc/langchaingo/llms"

	"github.com/evotodo/evo/store"
	"github.com/evotodo/evo/store/storetest"
)

// countMetrics records what a Runner reports.
type countMetrics struct {
	mu     sync.Mutex
	models []error
	tokens int
	tools  []string // "name code"
}

func (m *countMetrics) ModelCall(_ time.Duration, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.models = append(m.models, err)
}

func (m *countMetrics) Token() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tokens++
}

func (m *countMetrics) ToolCall(name string, _ time.Duration, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	code := "ok"
	if err != nil {
		code = store.ErrorCode(err)
	}
	m.tools = append(m.tools, name+" "+code)
}

// madeUpTool is a model that asks for a tool that does not exist, then answers.
type madeUpTool struct{}

func (madeUpTool) GenerateContent(_ context.Context, msgs []llms.MessageContent, _ ...llms.CallOption) (*llms.ContentResponse, error) {
	if msgs[len(msgs)-1].Role == llms.ChatMessageTypeTool {
		return &llms.ContentResponse{Choices: []*llms.ContentChoice{{Content: "Sorry.", StopReason: "stop"}}}, nil
	}
	return &llms.ContentResponse{Choices: []*llms.ContentChoice{{StopReason: "tool_calls", ToolCalls: []llms.ToolCall{
		{ID: "c1", Type: "function", FunctionCall: &llms.FunctionCall{Name: "launch_rocket", Arguments: "{}"}},
	}}}}, nil
}

// TestAgentMetrics: the runner reports each model call with its error, each
// streamed token and each tool call by name and outcome; a made-up tool name
// is reported as "unknown", never as the model's text.
func TestAgentMetrics(t *testing.T) {
	db := storetest.SQLite(t)
	todos := store.NewTodos(db, nil)
	user := storetest.User(t, db).ID

	t.Run("OK", func(t *testing.T) {
		m := &countMetrics{}
		r := NewRunner(Builtin{}, Tools(todos), Config{Metrics: m}, nil)
		sink := &recordSink{}
		if _, err := r.Run(context.Background(), Request{UserID: user, Message: "add buy milk"}, sink); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Run(context.Background(), Request{UserID: user, Message: "delete no such thing"}, &recordSink{}); err != nil {
			t.Fatal(err)
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		// add: the tool call, then the answer; delete: list_tasks finds nothing, then the answer.
		if len(m.models) != 4 || slices.ContainsFunc(m.models, func(err error) bool { return err != nil }) {
			t.Fatalf("model calls: got %v, want 4 without error", m.models)
		}
		if want := []string{"add_task ok", "list_tasks ok"}; !slices.Equal(m.tools, want) {
			t.Fatalf("tool calls: got %q, want %q", m.tools, want)
		}
		if m.tokens < len(sink.tokens) || len(sink.tokens) == 0 {
			t.Fatalf("tokens: got %d, the first run alone streamed %d", m.tokens, len(sink.tokens))
		}
	})
	t.Run("UnknownTool", func(t *testing.T) {
		m := &countMetrics{}
		r := NewRunner(madeUpTool{}, Tools(todos), Config{Metrics: m}, nil)
		if _, err := r.Run(context.Background(), Request{UserID: user, Message: "go"}, &recordSink{}); err != nil {
			t.Fatal(err)
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if want := []string{"unknown invalid"}; !slices.Equal(m.tools, want) {
			t.Fatalf("tool calls: got %q, want %q", m.tools, want)
		}
	})
	t.Run("Cancelled", func(t *testing.T) {
		m := &countMetrics{}
		r := NewRunner(Builtin{}, Tools(todos), Config{Metrics: m}, nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := r.Run(ctx, Request{UserID: user, Message: "add x"}, &recordSink{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if len(m.models) != 1 || !errors.Is(m.models[0], context.Canceled) {
			t.Fatalf("model calls: got %v, want one cancelled", m.models)
		}
	})
}
