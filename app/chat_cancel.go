package app

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/evotodo/evo/realtime"
	"github.com/evotodo/evo/store"
)

// Cancel on any replica.
//
// A chat runs on the replica that accepted it, which may hold no socket of
// the user. A cancel (the cancel frame, or POST /api/chat/{id}/cancel) that
// lands elsewhere is broadcast on the hub's control channel, which every
// replica subscribes at start: the replica running the chat cancels it and
// broadcasts an acknowledgement. No acknowledgement within cancelWait means
// no replica runs that chat of the user (not_found). Cancels are rare and
// small; each is one broker message to every replica, plus the answer.

// cancelWait bounds the wait for the replica running a chat to answer.
const cancelWait = 2 * time.Second

// controlMsg is a message of the control channel.
type controlMsg struct {
	Op   string `json:"op"` // opCancel or opCancelled
	User string `json:"user,omitempty"`
	ID   string `json:"id,omitempty"`
	Req  string `json:"req"` // the request's id, echoed by the answer
}

const (
	opCancel    = "chat.cancel"
	opCancelled = "chat.cancelled"
)

// cancelWaiters are the cancels this replica broadcast, by request id.
type cancelWaiters struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

func (w *cancelWaiters) add(req string) chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[string]chan struct{}{}
	}
	ch := make(chan struct{})
	w.m[req] = ch
	return ch
}

func (w *cancelWaiters) remove(req string) {
	w.mu.Lock()
	delete(w.m, req)
	w.mu.Unlock()
}

func (w *cancelWaiters) ack(req string) {
	w.mu.Lock()
	if ch, ok := w.m[req]; ok {
		close(ch)
		delete(w.m, req)
	}
	w.mu.Unlock()
}

// listenControl subscribes this replica to the control channel (after
// newChatService).
func (s *Server) listenControl(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return s.hub.ListenControl(sctx, s.handleControl)
}

// handleControl runs on the broker's delivery goroutine: no waiting here.
func (s *Server) handleControl(data []byte) {
	var m controlMsg
	if json.Unmarshal(data, &m) != nil {
		return
	}
	switch m.Op {
	case opCancel:
		if m.User == "" || !s.chat.cancelRun(m.User, m.ID) {
			return
		}
		ack, _ := json.Marshal(controlMsg{Op: opCancelled, Req: m.Req})
		s.wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), cancelWait)
			defer cancel()
			if err := s.hub.Broadcast(ctx, ack); err != nil {
				s.log.Warn("answer chat cancel", slog.String("user_id", m.User), slog.String("chat_id", m.ID), slog.Any("error", err))
			}
		})
	case opCancelled:
		s.chat.cancels.ack(m.Req)
	}
}

// cancelChat stops the user's chat id wherever it runs and reports whether
// one ran. The run then ends as usual: chat.done with status cancelled.
func (s *Server) cancelChat(ctx context.Context, user, id string) (bool, error) {
	if s.chat.cancelRun(user, id) {
		return true, nil
	}
	if !s.hub.Clustered() {
		return false, nil
	}
	req := store.NewID()
	acked := s.chat.cancels.add(req)
	defer s.chat.cancels.remove(req)
	data, _ := json.Marshal(controlMsg{Op: opCancel, User: user, ID: id, Req: req})
	if err := s.hub.Broadcast(ctx, data); err != nil {
		s.log.Warn("broadcast chat cancel", slog.String("user_id", user), slog.String("chat_id", id), slog.Any("error", err))
		return false, store.Errorf(store.CodeUnavailable, "the cancel cannot reach the other replicas: retry")
	}
	t := time.NewTimer(cancelWait)
	defer t.Stop()
	select {
	case <-acked:
		return true, nil
	case <-t.C:
		return false, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

func notRunning(id string) error {
	return store.Errorf(store.CodeNotFound, "no chat %s is running", quote(id))
}

// wsCancelAnywhere answers a cancel frame for a chat that does not run on
// this replica (wsCancel), without blocking the socket's read loop.
func (s *Server) wsCancelAnywhere(c *realtime.Client, id string) {
	if !s.hub.Clustered() {
		c.Send(realtime.ErrorFrame(store.CodeNotFound, store.ErrorMessage(notRunning(id))))
		return
	}
	s.wg.Go(func() {
		found, err := s.cancelChat(c.Context(), c.User(), id)
		switch {
		case err != nil && c.Context().Err() == nil:
			c.Send(realtime.ErrorFrame(store.ErrorCode(err), store.ErrorMessage(err)))
		case err == nil && !found:
			c.Send(realtime.ErrorFrame(store.CodeNotFound, store.ErrorMessage(notRunning(id))))
		}
	})
}

// postChatCancel is POST /api/chat/{id}/cancel: it stops the caller's chat
// id on whichever replica runs it. 202 {"id","status":"cancelling"}: the
// run ends with chat.done (status cancelled) on the sockets and in the
// answer of its POST /api/chat; 404 if no chat of the caller with that id
// runs.
func (s *Server) postChatCancel(c *fiber.Ctx) error {
	id := c.Params("id")
	if len(id) > maxChatIDLen || strings.ContainsFunc(id, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return store.FieldError("id", "id must be at most %d printable characters", maxChatIDLen)
	}
	found, err := s.cancelChat(c.UserContext(), userID(c), id)
	if err != nil {
		return err
	}
	if !found {
		return notRunning(id)
	}
	return c.Status(fiber.StatusAccepted).JSON(fiber.Map{"id": id, "status": "cancelling"})
}
