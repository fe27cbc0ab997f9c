package app

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/evotodo/evo/store"
)

// FuzzChatModelOutput: the model's answer is outside input too (a model can
// be prompted into anything). A fake OpenAI-compatible endpoint answers the
// first call with a tool call of the fuzzed name and arguments (or, with no
// name, with the fuzzed text) and the second with the fuzzed text. Whatever
// it says, POST /api/chat answers 200 (or 502 if the stream is unreadable),
// never a 5xx of Evo's own, and a 200 exchange is stored: it is in the
// user's history. On PostgreSQL (which cannot store NUL in text or jsonb).
func FuzzChatModelOutput(f *testing.F) {
	for _, s := range [][3]string{
		{"Added it.", "add_task", `{"title":"buy milk"}`},
		{"Added it.", "add_task", `{"title":"a\u0000b"}`},
		{"nul \x00 in the answer", "", ""},
		{"done", "list_tasks", `{"status":"all","limit":5}`},
		{"ok", "delete_task", `not json`},
		{"ok", "no_such_tool", `{}`},
		{"ok", "update_task", `{"task_id":"\u0000","title":"x"}`},
		{"\u2028\ufffd\xff", "complete_task", `{"task_id":"938a7a06-fe90-401c-84b6-6438912d8ca6"}`},
		{"ok", "add_task", `{"title":"x","description":"\\u0000"}`},
		{"ok", "add_task", `{"title":"\ud800"}`},
		{"ok", "add_task", `{"title":"\udc00\ud800x"}`},
	} {
		f.Add(s[0], s[1], s[2])
	}
	var mu sync.Mutex
	var text, tool, args string
	llm := newFakeLLM(f, func(n int, req llmRequest) llmReply {
		mu.Lock()
		defer mu.Unlock()
		if len(req.toolResults()) == 0 && tool != "" {
			return llmReply{calls: []llmCall{{"call_1", tool, args}}}
		}
		return llmReply{tokens: fragments(text, 3)}
	})
	ts := startServer(f, "postgres", llm.env("CHAT_RATE_LIMIT", "100000000", "CHAT_HISTORY", "0"))
	u, tok := ts.user(f)
	f.Fuzz(func(t *testing.T, fText, fTool, fArgs string) {
		mu.Lock()
		text, tool, args = fText, fTool, fArgs
		mu.Unlock()
		status, body := ts.do(t, "POST", "/api/chat", tok, map[string]string{"message": "hi"})
		what := fmt.Sprintf("model text %q, tool %q %q", fText, fTool, fArgs)
		switch status {
		case http.StatusOK:
		case http.StatusBadGateway:
			return
		default:
			t.Fatalf("%s: POST /api/chat %d %s", what, status, body)
		}
		reply := decode[ChatReply](t, body)
		status, hist := ts.do(t, "GET", "/api/chat/"+u.ID+"?limit=1", tok, nil)
		if status != http.StatusOK || !strings.Contains(string(hist), reply.ID) {
			t.Fatalf("%s: the exchange %s is not in the history: %d %s", what, reply.ID, status, hist)
		}
		if reply.UserID != u.ID || reply.Status != "completed" {
			t.Fatalf("%s: stored %+v", what, reply.ChatMessage)
		}
		_ = store.CodeInternal
	})
}
