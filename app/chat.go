package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/evotodo/evo/agent"
	"github.com/evotodo/evo/realtime"
	"github.com/evotodo/evo/store"
)

// Chat.
//
// POST /api/chat and the "chat" frame of /ws start the same run: a
// goroutine owned by the server (s.baseCtx, s.wg), not by the request or
// the socket. It publishes its frames, all carrying the chat's id, to every
// socket of the user on every replica (ephemeral, seq 0):
//
//	{"type":"chat.started","id":I,"message":"add buy milk"}
//	{"type":"chat.token","id":I,"delta":"Added "}
//	{"type":"chat.tool","id":I,"name":"add_task","arguments":{...},"result":{...}}  (or "error":"...")
//	{"type":"chat.done","id":I,"message":{stored exchange}}
//	{"type":"chat.error","id":I,"code":"bad_gateway","message":"..."}
//
// The exchange is stored once the run ends: "completed"; "cancelled" (a
// cancel frame, or shutdown) with the partial answer; "failed" (the model
// provider failed or timed out) with an empty response but the tool calls
// that did run, since they changed todos. A failed run sends chat.error
// instead of chat.done, and POST answers 502.

// Chat statuses of a stored exchange.
const (
	chatCompleted = "completed"
	chatCancelled = "cancelled"
	chatFailed    = "failed"
)

// Limits of the chat endpoints.
const (
	maxChatIDLen        = 128
	defaultHistoryLimit = 20
	maxHistoryLimit     = 100
	// sseKeepAlive is how often an idle SSE response gets a comment, so
	// that proxies keep it open while the model thinks.
	sseKeepAlive = 15 * time.Second
)

// chatService is the chat state of one replica: the runner, the rate
// limiter and the chats running here (for cancel).
type chatService struct {
	runner  *agent.Runner
	limiter *userLimit // CHAT_RATE_LIMIT (ratelimit.go)

	mu      sync.Mutex
	running map[chatKey]*chatRun
	cancels cancelWaiters // cancels sent to the other replicas (chat_cancel.go)
}

// chatKey names a running chat: ids are chosen by clients, so they are
// only unique per user.
type chatKey struct{ user, id string }

// chatRun is one chat running on this replica.
type chatRun struct {
	key     chatKey
	msgID   string // the stored exchange's id (also the chat's id unless the client chose one)
	in      chatInput
	created time.Time
	ctx     context.Context
	cancel  context.CancelFunc
	stream  *frameQueue // the SSE response, nil otherwise

	ending bool // the answer is final: no longer cancellable (under chatService.mu)

	done chan struct{} // closed when msg and err are set
	msg  store.ChatMessage
	err  error // what POST answers instead of msg: 502, or a store error
}

// chatInput is a chat message as POST and the chat frame send it.
type chatInput struct {
	Message *string `json:"message"`
	// ID is the client's id for the chat (frame only); empty: the server
	// picks one.
	ID string `json:"id"`
	// ConversationID is echoed back, as sent (a string or a number).
	ConversationID json.RawMessage `json:"conversation_id"`
}

func (in *chatInput) validate() error {
	if in.Message == nil {
		return store.FieldError("message", "message is required")
	}
	msg := *in.Message
	switch n := utf8.RuneCountInString(msg); {
	case strings.TrimSpace(msg) == "":
		return store.FieldError("message", "message must not be empty or only whitespace")
	case n > store.MaxChatMessageLen:
		return store.FieldError("message", "message must be at most %d characters, got %d", store.MaxChatMessageLen, n)
	case !utf8.ValidString(msg):
		return store.FieldError("message", "message must be valid UTF-8")
	case strings.ContainsRune(msg, 0):
		return store.FieldError("message", "message must not contain NUL characters")
	}
	if len(in.ID) > maxChatIDLen || strings.ContainsFunc(in.ID, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return store.FieldError("id", "id must be at most %d printable characters", maxChatIDLen)
	}
	switch cid := strings.TrimSpace(string(in.ConversationID)); {
	case cid == "" || cid == "null":
		in.ConversationID = nil
	case cid[0] != '"' && cid[0] != '-' && (cid[0] < '0' || cid[0] > '9'):
		return store.FieldError("conversation_id", "conversation_id must be a string or a number")
	}
	return nil
}

// chatFrame is every chat frame; each type uses some of the fields.
type chatFrame struct {
	Type           string          `json:"type"`
	ID             string          `json:"id"`
	Message        any             `json:"message,omitempty"`
	ConversationID json.RawMessage `json:"conversation_id,omitempty"`
	Delta          string          `json:"delta,omitempty"`
	Name           string          `json:"name,omitempty"`
	Arguments      json.RawMessage `json:"arguments,omitempty"`
	Result         any             `json:"result,omitempty"`
	Error          string          `json:"error,omitempty"`
	Code           string          `json:"code,omitempty"`
}

// ChatReply is the answer of POST /api/chat: the stored exchange, and the
// conversation_id of the request, if it had one.
type ChatReply struct {
	store.ChatMessage
	ConversationID json.RawMessage `json:"conversation_id,omitempty"`
}

// openModel returns the model LLM_* configures. In production a network
// provider must answer at start-up (LLM_BASE_URL reachable, LLM_API_KEY
// accepted).
func openModel(ctx context.Context, cfg Config, log *slog.Logger) (agent.Model, error) {
	pc := agent.ProviderConfig{Provider: cfg.LLMProvider, BaseURL: cfg.LLMBaseURL, APIKey: cfg.LLMAPIKey, Model: cfg.LLMModel}
	model, err := agent.NewModel(pc)
	if err != nil {
		return nil, fmt.Errorf("LLM_PROVIDER: %w", err)
	}
	if cfg.Production() && cfg.LLMProvider != agent.ProviderBuiltin {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := agent.Ping(pctx, pc); err != nil {
			if errors.Is(err, agent.ErrKeyRejected) {
				return nil, fmt.Errorf("LLM_API_KEY: %w", err)
			}
			return nil, fmt.Errorf("LLM_BASE_URL: the model endpoint cannot be reached: %w", err)
		}
	}
	attrs := []any{slog.String("provider", cfg.LLMProvider)}
	if cfg.LLMProvider != agent.ProviderBuiltin {
		attrs = append(attrs, slog.String("base_url", cfg.LLMBaseURL), slog.String("model", cfg.LLMModel))
	}
	log.Info("chat model", attrs...)
	return model, nil
}

// newChatService wires the runner to model and the todo tools (after
// openHub and s.writes: the tools need s.todos, the rate limits s.redis).
func newChatService(s *Server, model agent.Model) *chatService {
	// The agent's writes draw on the user's RATE_LIMIT_WRITES budget, as
	// REST and MCP writes do (after openHub: s.writes).
	runner := agent.NewRunner(model, loggedTools(limitedTools(agent.Tools(s.todos), s.writes), s.log), agent.Config{
		MaxSteps:     s.cfg.ChatMaxSteps,
		MaxToolCalls: s.cfg.ChatMaxToolCalls,
		Timeout:      s.cfg.LLMTimeout,
		ToolTimeout:  s.cfg.RequestTimeout,
		Metrics:      s.metrics,
	}, s.log)
	limiter := newUserLimit(s, surfaceChat, "chat messages", s.cfg.ChatRateLimit)
	return &chatService{runner: runner, limiter: limiter, running: map[chatKey]*chatRun{}}
}

// startChat checks and admits a message, then starts its run. retry is
// set with a rate_limited error.
func (s *Server) startChat(ctx context.Context, user string, in chatInput, stream bool) (run *chatRun, retry time.Duration, err error) {
	if err := in.validate(); err != nil {
		return nil, 0, err
	}
	retry, err = s.chat.limiter.allow(ctx, user)
	if err != nil {
		return nil, retry, err
	}
	run = &chatRun{in: in, msgID: store.NewID(), created: store.Now(), done: make(chan struct{})}
	run.key = chatKey{user: user, id: in.ID}
	if run.key.id == "" {
		run.key.id = run.msgID
	}
	if stream {
		run.stream = newFrameQueue()
	}
	run.ctx, run.cancel = context.WithCancel(s.baseCtx)
	if !s.chat.register(run) {
		run.cancel()
		return nil, 0, &store.Error{Code: store.CodeConflict, Field: "id", Message: fmt.Sprintf("a chat with id %s is already running", quote(in.ID))}
	}
	s.wg.Go(func() { s.runChat(run) })
	return run, 0, nil
}

func (cs *chatService) register(run *chatRun) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if _, dup := cs.running[run.key]; dup {
		return false
	}
	cs.running[run.key] = run
	return true
}

// cancelRun cancels the user's chat id if it runs on this replica.
func (cs *chatService) cancelRun(user, id string) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	run, ok := cs.running[chatKey{user, id}]
	if !ok || run.ending {
		return false
	}
	run.cancel()
	return true
}

// end marks run final before its last frame goes out, so that a cancel
// sent after chat.done is answered not_found, never with silence.
func (cs *chatService) end(run *chatRun) {
	cs.mu.Lock()
	run.ending = true
	cs.mu.Unlock()
}

// runChat runs the agent for one message, publishes its frames and
// stores the exchange.
func (s *Server) runChat(run *chatRun) {
	defer func() {
		s.chat.mu.Lock()
		delete(s.chat.running, run.key)
		s.chat.mu.Unlock()
		run.cancel()
		if run.stream != nil {
			run.stream.close()
		}
		close(run.done)
	}()
	user, msg := run.key.user, *run.in.Message
	s.emit(run, chatFrame{Type: "chat.started", ID: run.key.id, Message: msg, ConversationID: run.in.ConversationID})

	reply, err := s.runAgent(run, agent.Request{UserID: user, Message: msg, History: s.chatContext(run.ctx, user)})
	s.chat.end(run)

	status := chatCompleted
	var modelErr *agent.ModelError
	switch {
	case err == nil:
	case run.ctx.Err() != nil:
		status = chatCancelled
	case errors.As(err, &modelErr):
		status = chatFailed
		reply.Text = "" // nothing half-written: only the tool calls that ran are kept
		s.log.Warn("chat model failed", slog.String("user_id", user), slog.String("chat_id", run.key.id), slog.Any("error", err))
		// The log gets the redacted provider error; clients a fixed sentence.
		run.err = fiber.NewError(http.StatusBadGateway, modelErr.Public())
	default:
		status = chatFailed
		reply.Text = ""
		run.err = err
	}
	s.metrics.chatRun(status, time.Since(run.created))
	calls := reply.ToolCalls
	if calls == nil {
		calls = []agent.ToolCall{}
	}
	callsJSON, jerr := json.Marshal(calls)
	if jerr != nil {
		s.log.Error("encode chat tool calls", slog.Any("error", jerr))
		callsJSON = []byte("[]")
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(run.ctx), s.cfg.RequestTimeout)
	defer cancel()
	// The model's text and tool arguments may hold NUL or (arguments) lone
	// UTF-16 surrogate escapes, which PostgreSQL cannot store (text, jsonb):
	// they become U+FFFD, on both stores.
	stored, serr := s.db.CreateChatMessage(sctx, store.ChatMessage{
		ID: run.msgID, UserID: user, Message: msg, Response: strings.ReplaceAll(reply.Text, "\x00", "\uFFFD"),
		ToolCalls: storableJSON(callsJSON), Status: status, CreatedAt: run.created,
	})
	if errors.Is(serr, store.ErrUserNotFound) {
		// The user was deleted while the agent ran: the store kept nothing for them.
		s.verifier.ForgetUser(user)
		run.err = store.Errorf(store.CodeUnauthorized, "token user does not exist")
		s.emit(run, chatFrame{Type: "chat.error", ID: run.key.id, Code: store.CodeUnauthorized, Message: store.ErrorMessage(run.err)})
		return
	}
	if serr != nil {
		s.log.Error("store chat message", slog.String("user_id", user), slog.String("chat_id", run.key.id), slog.Any("error", serr))
		if run.err == nil {
			run.err = serr
		}
	}
	if run.err != nil {
		code, message := store.ErrorCode(run.err), store.ErrorMessage(run.err)
		var fe *fiber.Error
		if errors.As(run.err, &fe) {
			_, body := errorBody(fe)
			code, message = body.Code, body.Detail
		}
		s.emit(run, chatFrame{Type: "chat.error", ID: run.key.id, Code: code, Message: message})
		return
	}
	run.msg = stored
	s.emit(run, chatFrame{Type: "chat.done", ID: run.key.id, Message: stored, ConversationID: run.in.ConversationID})
}

// runAgent runs the agent for run; a panic is an internal error of this
// run, not of the server.
func (s *Server) runAgent(run *chatRun, req agent.Request) (reply agent.Reply, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("chat run panicked", slog.String("user_id", req.UserID), slog.Any("panic", p), slog.String("stack", string(debug.Stack())))
			err = fmt.Errorf("chat run panicked: %v", p)
		}
	}()
	return s.chat.runner.Run(run.ctx, req, chatSink{s, run})
}

// chatContext returns the user's last CHAT_HISTORY exchanges, oldest
// first, leaving out failed ones. Without them the chat still runs.
func (s *Server) chatContext(ctx context.Context, user string) []agent.Exchange {
	if s.cfg.ChatHistory == 0 {
		return nil
	}
	ms, err := s.db.ListChatMessages(ctx, user, time.Time{}, s.cfg.ChatHistory)
	if err != nil {
		s.log.Warn("load chat history", slog.String("user_id", user), slog.Any("error", err))
		return nil
	}
	var out []agent.Exchange
	for _, m := range slices.Backward(ms) {
		if m.Status != chatFailed {
			out = append(out, agent.Exchange{Message: m.Message, Response: m.Response})
		}
	}
	return out
}

// emit publishes a frame of run to the user's sockets and, for SSE, to
// the response.
func (s *Server) emit(run *chatRun, f chatFrame) {
	data, err := json.Marshal(f)
	if err != nil {
		s.log.Error("encode chat frame", slog.String("type", f.Type), slog.Any("error", err))
		return
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(run.ctx), 5*time.Second)
	defer cancel()
	if err := s.hub.Publish(pctx, run.key.user, realtime.Publication{Data: data}); err != nil {
		s.log.Warn("publish chat frame", slog.String("user_id", run.key.user), slog.String("type", f.Type), slog.Any("error", err))
	}
	if run.stream != nil {
		run.stream.push(sseFrame{typ: f.Type, data: data})
	}
}

// chatSink turns the runner's output into frames.
type chatSink struct {
	s   *Server
	run *chatRun
}

func (k chatSink) Token(delta string) {
	k.s.emit(k.run, chatFrame{Type: "chat.token", ID: k.run.key.id, Delta: delta})
}

func (k chatSink) Tool(call agent.ToolCall) {
	k.s.emit(k.run, chatFrame{Type: "chat.tool", ID: k.run.key.id, Name: call.Name, Arguments: call.Arguments, Result: call.Result, Error: call.Error})
}

// postChat is POST /api/chat {message, conversation_id?}: it runs the
// agent and answers with the stored exchange, or, with Accept:
// text/event-stream, streams the chat frames as Server-Sent Events.
func (s *Server) postChat(c *fiber.Ctx) error {
	var in chatInput
	if err := decodeJSON(c.Body(), &in); err != nil {
		return err
	}
	in.ID = "" // ids are the frame's; here the server picks one
	stream := strings.Contains(c.Get(fiber.HeaderAccept), "text/event-stream")
	run, retry, err := s.startChat(c.UserContext(), userID(c), in, stream)
	if err != nil {
		if retry > 0 {
			c.Set(fiber.HeaderRetryAfter, strconv.Itoa(int(math.Ceil(retry.Seconds()))))
		}
		return err
	}
	if stream {
		s.streamChat(c, run)
		return nil
	}
	// The run is the server's: it goes on (and is stored) even if this
	// client hangs up, since fasthttp does not tell.
	<-run.done
	if run.err != nil {
		return run.err
	}
	return c.JSON(ChatReply{ChatMessage: run.msg, ConversationID: in.ConversationID})
}

// streamChat answers with the run's frames as SSE, each as
// "event: <type>\ndata: <frame>\n\n", ending after chat.done or
// chat.error. The status is 200 whatever happens next: errors come as
// chat.error events. A client that hangs up stops its stream, not the run.
func (s *Server) streamChat(c *fiber.Ctx, run *chatRun) {
	c.Set(fiber.HeaderContentType, "text/event-stream; charset=utf-8")
	c.Set(fiber.HeaderCacheControl, "no-cache")
	c.Set("X-Accel-Buffering", "no")
	// fasthttp's write deadline (WriteTimeout) starts before the body is
	// streamed; each round of writes extends it instead, so only a stalled
	// client is cut off. It is extended before the frames are written: a
	// frame larger than w's buffer goes out at once, and the wait for it may
	// have outlasted the previous deadline.
	conn, q, grace := c.Context().Conn(), run.stream, s.cfg.RequestTimeout
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
		defer q.abandon()
		for {
			frames, open := q.wait(sseKeepAlive)
			_ = conn.SetWriteDeadline(time.Now().Add(grace))
			if len(frames) == 0 && open {
				w.WriteString(": keep-alive\n\n")
			}
			for _, f := range frames {
				w.WriteString("event: " + f.typ + "\ndata: ")
				w.Write(f.data)
				w.WriteString("\n\n")
			}
			if err := w.Flush(); err != nil || !open {
				return
			}
		}
	})
}

// listChat is GET /api/chat/{user_id}?limit=20&before=<RFC 3339 time>:
// the caller's exchanges created before before, newest first. Another
// user's id is 404, as if there were no such user.
func (s *Server) listChat(c *fiber.Ctx) error {
	user := userID(c)
	if c.Params("user_id") != user {
		return store.Errorf(store.CodeNotFound, "user not found")
	}
	limit, err := queryInt(c, "limit", defaultHistoryLimit)
	if err != nil {
		return err
	}
	if limit < 1 || limit > maxHistoryLimit {
		return store.FieldError("limit", "limit must be between 1 and %d, got %d", maxHistoryLimit, limit)
	}
	var before time.Time
	if v := c.Query("before"); v != "" {
		if before, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return store.FieldError("before", "before must be an RFC 3339 time such as 2026-11-28T12:34:53Z, got %q", v)
		}
	}
	ms, err := s.db.ListChatMessages(c.UserContext(), user, before, limit)
	if err != nil {
		return err
	}
	if ms == nil {
		ms = []store.ChatMessage{}
	}
	return c.JSON(ms)
}

// wsChat handles {"type":"chat","message":"...","id":"<optional>"}: the run
// belongs to the server, so the answer reaches the user's other sockets
// even if this one closes. Refusals go to this socket only, as chat.error.
func (s *Server) wsChat(c *realtime.Client, raw []byte) {
	var in chatInput
	if err := json.Unmarshal(raw, &in); err != nil {
		c.Send(chatErrorFrame("", store.CodeBadRequest, `a chat frame is {"type":"chat","message":"...","id":"<optional>"}`))
		return
	}
	if err := s.socketUser(c); err != nil {
		c.Send(chatErrorFrame(in.ID, store.ErrorCode(err), store.ErrorMessage(err)))
		return
	}
	if _, _, err := s.startChat(c.Context(), c.User(), in, false); err != nil {
		c.Send(chatErrorFrame(in.ID, store.ErrorCode(err), store.ErrorMessage(err)))
	}
}

// socketUser rechecks the user of a socket for a frame that acts as them
// (chat, auth): the token was checked at connect, but the user may have
// been deleted since. A deleted user's socket is closed (3502). On an
// error the frame must not run; the caller answers it (a closed socket
// sends nothing more).
func (s *Server) socketUser(c *realtime.Client) error {
	ctx, cancel := context.WithTimeout(c.Context(), s.cfg.RequestTimeout)
	defer cancel()
	err := s.verifier.CheckUser(ctx, c.User())
	switch store.ErrorCode(err) {
	case "":
		return nil
	case store.CodeUnauthorized:
		c.Close(realtime.CloseForbidden, "user no longer exists")
		return err
	}
	s.log.Warn("socket user check", slog.String("user_id", c.User()), slog.Any("error", err))
	return store.Errorf(store.CodeUnavailable, "cannot check the user now: try again")
}

// wsCancel handles {"type":"cancel","id":"..."}: it stops the user's chat
// with that id on whichever replica runs it (chat_cancel.go); the partial
// answer is stored as cancelled and sent as chat.done.
func (s *Server) wsCancel(c *realtime.Client, raw []byte) {
	var f struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(raw, &f); err != nil || f.ID == "" {
		c.Send(realtime.ErrorFrame(store.CodeBadRequest, `a cancel frame is {"type":"cancel","id":"<chat id>"}`))
		return
	}
	if !s.chat.cancelRun(c.User(), f.ID) {
		s.wsCancelAnywhere(c, f.ID)
	}
}

func chatErrorFrame(id, code, message string) []byte {
	data, _ := json.Marshal(chatFrame{Type: "chat.error", ID: id, Code: code, Message: message})
	return data
}

// sseFrame is a frame queued for an SSE response.
type sseFrame struct {
	typ  string
	data []byte
}

// frameQueue hands a run's frames to its SSE response. The run never
// waits for the client: the queue grows instead (bounded by the run).
type frameQueue struct {
	mu     sync.Mutex
	frames []sseFrame
	closed bool // the run ended
	gone   bool // the response ended
	wake   chan struct{}
}

func newFrameQueue() *frameQueue { return &frameQueue{wake: make(chan struct{}, 1)} }

func (q *frameQueue) push(f sseFrame) {
	q.mu.Lock()
	if !q.closed && !q.gone {
		q.frames = append(q.frames, f)
	}
	q.mu.Unlock()
	q.notify()
}

func (q *frameQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.notify()
}

func (q *frameQueue) abandon() {
	q.mu.Lock()
	q.gone, q.frames = true, nil
	q.mu.Unlock()
}

func (q *frameQueue) notify() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// wait returns the queued frames, waiting up to d for one; open is false
// once the run ended and everything was taken.
func (q *frameQueue) wait(d time.Duration) (frames []sseFrame, open bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		q.mu.Lock()
		if len(q.frames) > 0 || q.closed {
			frames, q.frames = q.frames, nil
			open = !q.closed
			q.mu.Unlock()
			return frames, open
		}
		q.mu.Unlock()
		select {
		case <-q.wake:
		case <-t.C:
			return nil, true
		}
	}
}

// storableJSON re-encodes data with every NUL and lone surrogate in its
// strings (and keys) replaced by U+FFFD (encoding/json reads a lone
// surrogate escape as U+FFFD).
func storableJSON(data []byte) []byte {
	if !bytes.Contains(data, []byte(`\u`)) {
		return data
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return data
	}
	var clean func(any) any
	clean = func(v any) any {
		switch v := v.(type) {
		case string:
			return strings.ReplaceAll(v, "\x00", "\uFFFD")
		case []any:
			for i := range v {
				v[i] = clean(v[i])
			}
		case map[string]any:
			m := make(map[string]any, len(v))
			for k, x := range v {
				m[strings.ReplaceAll(k, "\x00", "\uFFFD")] = clean(x)
			}
			return m
		}
		return v
	}
	out, err := json.Marshal(clean(v))
	if err != nil {
		return data
	}
	return out
}
