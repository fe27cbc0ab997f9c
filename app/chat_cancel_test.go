package app

import (
	"net/http"
	"testing"
	"time"

	"github.com/evotodo/evo/store"
	"github.com/evotodo/evo/store/storetest"
)

// TestChatCancelAcrossReplicas: a chat POSTed to replica A, where the user
// has no socket, is stopped by a cancel frame from the user's socket on
// replica B, and another by POST /api/chat/{id}/cancel on B; a chat id that
// runs nowhere (or is another user's) is not_found.
func TestChatCancelAcrossReplicas(t *testing.T) {
	gate := make(chan struct{})
	defer close(gate)
	llm := newFakeLLM(t, func(int, llmRequest) llmReply {
		return llmReply{tokens: []string{"Here ", "is ", "a ", "long ", "answer."}, gateAfter: 2, gate: gate}
	})
	js := newJWKSServer(t)
	env := llm.env("DATABASE_URL", storetest.PostgresURL(t), "REDIS_URL", redisURL(t))
	a, b := startReplica(t, js, "postgres", env), startReplica(t, js, "postgres", env)
	u, tok := a.user(t)
	_, otherTok := a.user(t)
	onB := live(t, b, tok)

	for _, how := range []string{"frame", "rest"} {
		t.Run(how, func(t *testing.T) {
			type answer struct {
				status int
				body   []byte
			}
			posted := make(chan answer, 1)
			go func() {
				status, body := a.do(t, "POST", "/api/chat", tok, map[string]string{"message": "tell me everything"})
				posted <- answer{status, body}
			}()
			started := onB.expectChat("chat.started")
			onB.expectChat("chat.token")
			onB.expectChat("chat.token")

			if status, body := b.do(t, "POST", "/api/chat/"+started.ID+"/cancel", otherTok, nil); status != http.StatusNotFound {
				t.Fatalf("another user's cancel: got %d %s, want 404", status, body)
			}
			if how == "frame" {
				onB.send(map[string]string{"type": "cancel", "id": started.ID})
			} else if status, body := b.do(t, "POST", "/api/chat/"+started.ID+"/cancel", tok, nil); status != http.StatusAccepted {
				t.Fatalf("cancel: got %d %s, want 202", status, body)
			}
			done := onB.expectChat("chat.done")
			if msg := done.stored(t); done.ID != started.ID || msg.Status != "cancelled" || msg.Response != "Here is " {
				t.Fatalf("done: got %+v %s", done, done.Message)
			}
			select {
			case <-llm.cancelled:
			case <-time.After(5 * time.Second):
				t.Fatal("the model request was not cancelled")
			}
			select {
			case r := <-posted:
				if reply := decode[ChatReply](t, r.body); r.status != http.StatusOK || reply.Status != "cancelled" || reply.UserID != u.ID {
					t.Fatalf("POST on A: got %d %s", r.status, r.body)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("POST /api/chat on A did not answer")
			}
		})
	}

	onB.send(map[string]string{"type": "cancel", "id": "no-such-chat"})
	if f := onB.readChat(); f.Type != "error" || f.Code != store.CodeNotFound {
		t.Fatalf("cancel of a chat that runs nowhere: got %+v", f)
	}
	if status, body := b.do(t, "POST", "/api/chat/no-such-chat/cancel", tok, nil); status != http.StatusNotFound || decode[ErrorBody](t, body).Code != store.CodeNotFound {
		t.Fatalf("REST cancel of a chat that runs nowhere: got %d %s", status, body)
	}
}
