package realtime

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
	"golang.org/x/time/rate"
)

// Conn is the subset of *websocket.Conn (gofiber/contrib/websocket, which embeds
// fasthttp/websocket.Conn) the hub uses.
type Conn interface {
	ReadMessage() (messageType int, p []byte, err error)
	WriteMessage(messageType int, data []byte) error
	WriteControl(messageType int, data []byte, deadline time.Time) error
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
	SetReadLimit(limit int64)
	SetPongHandler(h func(appData string) error)
	Close() error
}

// FrameHandler handles application frames (chat, cancel, auth, ...). It runs on the
// connection's read goroutine; it must not block long (start goroutines owned by
// c.Context() for long work). A panic in it is recovered, logged, and closes the socket
// with CloseInternalError.
type FrameHandler interface {
	HandleFrame(c *Client, typ string, raw []byte)
}

// Error codes of the error frames the hub sends itself.
const (
	// ErrorBadRequest: the frame is not a JSON object with a type, or its type is unknown.
	ErrorBadRequest = "bad_request"
	// ErrorRateLimited: the client sent frames faster than Config.RateLimit; the frame was dropped.
	ErrorRateLimited = "rate_limited"
)

// ErrorFrame encodes an error frame: {"type":"error","code":code,"message":message}.
func ErrorFrame(code, message string) []byte {
	b, _ := json.Marshal(struct {
		Type    string `json:"type"`
		Code    string `json:"code"`
		Message string `json:"message"`
	}{"error", code, message})
	return b
}

// closeGrace is how long a socket waits for the peer's close frame after sending its own.
const closeGrace = time.Second

var pongFrame = []byte(`{"type":"pong"}`)

// Session is what Serve needs to know of a socket besides its connection.
type Session struct {
	// User is the socket's user.
	User string
	// Expires is the auth token's expiry (zero: never); when it passes (see
	// Client.SetExpires) the socket is closed with CloseTokenExpired.
	Expires time.Time
	// Since, if set, resumes the socket at connect (/ws?since=N): it is answered exactly
	// like a resume frame with that since sent first.
	Since *int64
}

// Serve runs one WebSocket connection until it closes; it blocks for the connection's
// lifetime (required by contrib/websocket, whose Conn is pooled once the handler
// returns). Frames the hub does not handle itself are passed to fh (nil: they are
// answered with a bad_request error).
//
// Protocol (JSON text frames). The server sends first
// {"type":"hello","user_id":U,"seq":N,"replica":R}, N being the user's latest seq and R
// Config.Replica (left out if empty). The socket is live at once: every event after N
// follows, in order. Then:
//   - client {"type":"resume","since":S} (or Session.Since at connect, answered before
//     anything else): the server sends the events after S this socket has not sent (or
//     that follow S, if S is beyond what it sent), then
//     {"type":"resumed","since":S,"seq":M,"replayed":K}, M being the last seq sent and K
//     the events sent meanwhile; live events (> M) follow. Events after S that the socket
//     already sent are not sent again. When nothing newer was sent before the resume
//     arrived (a resume at connect, or first, before any change), the stream is S+1, S+2,
//     ... M exactly; otherwise the missing events come after the newer ones already sent.
//     If events after S were pruned from the log the answer is {"type":"resync","seq":M}
//     instead: the client refetches its list and continues from M; also if S is beyond
//     the user's log (the log was reset). A since that is not a non-negative integer
//     closes the socket with CloseBadRequest.
//   - client {"type":"ping"}: server {"type":"pong"}.
//   - anything else goes to fh; a frame that is not JSON or has no type is answered with
//     {"type":"error","code":"bad_request",...}; frames over the rate limit with
//     {"type":"error","code":"rate_limited",...} (and dropped).
//
// Cancelling ctx closes the socket with CloseGoingAway.
func (h *Hub) Serve(ctx context.Context, conn Conn, s Session, fh FrameHandler) {
	h.servingMu.Lock()
	if h.stopping.Load() {
		h.servingMu.Unlock()
		h.refuse(conn, CloseGoingAway, ReasonGoingAway)
		return
	}
	h.serving.Add(1)
	h.servingMu.Unlock()
	defer h.serving.Done()

	user := s.User
	conn.SetReadLimit(h.cfg.MaxMessageSize)
	c := newClient(ctx, h, conn, user)
	defer c.cancel()
	if code, reason := h.register(c.ctx, c); code != 0 {
		h.refuse(conn, code, reason)
		return
	}
	if h.stopping.Load() { // Shutdown may have missed c while it registered
		c.Close(CloseGoingAway, ReasonGoingAway)
	}
	stop := context.AfterFunc(ctx, func() { c.Close(CloseGoingAway, ReasonGoingAway) })
	defer stop()
	seq, err := h.helloSeq(c.ctx, user)
	if err != nil && !c.closing.Load() {
		c.log.Error("realtime: cannot greet socket", slog.Any("error", err))
		c.Close(CloseInternalError, ReasonInternalError)
	}
	c.start(seq, s.Expires, s.Since)
	if err == nil {
		h.started(user, seq)
	}
	c.readLoop(fh)
	c.finish()
	h.unregister(ctx, c)
}

// refuse closes a socket that was never registered.
func (h *Hub) refuse(conn Conn, code int, reason string) {
	h.cfg.Metrics.SocketClosed(code)
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(h.cfg.WriteTimeout))
}

// Client is one WebSocket of a user, as seen by a FrameHandler.
//
// # The seam between replay and live, and ordering
//
// A client tracks lastSeq, the highest seq it enqueued (or, after a resume beyond it,
// the client's since), and base: every event in (base, lastSeq] was sent on this socket
// or is the client's already. A live sequenced publication (from the broker) with seq <=
// lastSeq is a duplicate and dropped; seq == lastSeq+1 is enqueued; seq > lastSeq+1
// reveals a gap (a message lost: the hub delivers a user's publications in seq order and
// waits Config.GapWait for a missing one, see sequencer) and starts a catch-up. While a
// catch-up runs ("catching"), live sequenced publications are not enqueued at all: they
// only set dirty. The catch-up goroutine (at most one per client, owned by the client)
// first sends the fills (ranges below base a resume asked for), then loops: read
// History.Since(lastSeq, ReplayBatch) without the lock; take the lock; enqueue every
// event with seq > lastSeq; if the page was full or dirty was set meanwhile, clear dirty
// and read again; else answer the pending resume and leave catching, under the same
// lock. Events are published only after their transaction committed, so an event
// dropped while dirty is in the log by the next read: nothing is lost, nothing is sent
// twice, and the switch back to live happens under the lock that live delivery takes,
// with lastSeq exactly where the log ended. Ephemeral publications (Seq 0) are enqueued
// directly in every state, after hello.
//
// A new socket starts with lastSeq = base = N (hello's seq) and a catch-up from N. The
// user's broker channel is subscribed (confirmed) before N is read, so every event after
// N either arrives live or is in the log. A resume {since: S}: S > lastSeq sets lastSeq
// = base = S (a since beyond what the hub knows of is checked against the log, resync if
// the log ends before it); base <= S <= lastSeq is answered at once (nothing is missing),
// or when the fills still running end; S < base adds the fill (S, base] and sets base = S. When the broker reports a
// resubscription (messages may have been lost) or the hub's log check finds an event
// that was never delivered, every client catches up. If History fails, the catch-up
// retries with backoff as long as the socket lives.
type Client struct {
	hub     *Hub
	conn    Conn
	user    string
	log     *slog.Logger
	ctx     context.Context
	cancel  context.CancelFunc
	limiter *rate.Limiter
	wg      sync.WaitGroup // the writer and the catch-up goroutine

	closing atomic.Bool   // set once, under mu, by closeLocked
	closeCh chan struct{} // closed with closing
	wake    chan struct{} // the queue has messages (cap 1)
	drained chan struct{} // the writer took the queue (cap 1)

	mu          sync.Mutex
	closed      bool // Serve is finishing: no goroutine may be started
	closeCode   int
	closeReason string
	queue       [][]byte
	greeted     bool  // hello enqueued: lastSeq and base are set
	lastSeq     int64 // highest seq enqueued (or claimed by the client's resume)
	base        int64 // the client has every event in (base, lastSeq]
	known       int64 // highest seq known to exist (hello, live publications)
	verify      bool  // lastSeq is a client's claim beyond known: check the log reaches it
	catching    bool  // live sequenced publications are diverted to the catch-up
	dirty       bool  // a live sequenced publication was dropped while catching
	running     bool  // the catch-up goroutine runs
	fills       []seqRange
	resume      *pendingResume
	resyncAfter bool   // a fill was pruned: resync when the catch-up ends
	wbuf        []byte // the writer's coalescing buffer (writeCoalesced)
	expiry      *time.Timer
	expiryGen   uint64
}

// pendingResume is a resume to answer when the catch-up it started ends.
type pendingResume struct {
	since    int64
	replayed int
}

// seqRange is the events (from, to] of a fill.
type seqRange struct{ from, to int64 }

func newClient(ctx context.Context, h *Hub, conn Conn, user string) *Client {
	ctx, cancel := context.WithCancel(ctx)
	return &Client{
		hub:     h,
		conn:    conn,
		user:    user,
		log:     h.log.With(slog.String("user", user)),
		ctx:     ctx,
		cancel:  cancel,
		limiter: rate.NewLimiter(rate.Limit(h.cfg.RateLimit), h.cfg.RateBurst),
		closeCh: make(chan struct{}),
		wake:    make(chan struct{}, 1),
		drained: make(chan struct{}, 1),
	}
}

// User returns the id of the socket's user.
func (c *Client) User() string { return c.user }

// Context returns a context cancelled when the socket closes (or starts closing).
func (c *Client) Context() context.Context { return c.ctx }

// Send enqueues an ephemeral frame to this socket only. It returns false if the socket is
// closed or its queue is full (the socket is then closed as a slow consumer).
func (c *Client) Send(data []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.enqueueLocked(data)
}

// SetExpires re-arms the token expiry: a fresh token valid until t was accepted (zero t:
// never expires). A t in the past closes the socket with CloseTokenExpired.
func (c *Client) SetExpires(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setExpiresLocked(t)
}

// Close closes the socket with code and reason (see close.go). It never blocks: the close
// frame is written by the socket's writer goroutine, which then ends the read loop. Only
// the first call counts; it may be made from any goroutine, also after the socket closed.
func (c *Client) Close(code int, reason string) {
	c.mu.Lock()
	c.closeLocked(code, reason)
	c.mu.Unlock()
}

func (c *Client) closeLocked(code int, reason string) {
	if c.closing.Load() {
		return
	}
	c.closeCode, c.closeReason = code, reason
	c.closing.Store(true)
	close(c.closeCh)
	c.cancel()
	if code != 0 {
		c.hub.cfg.Metrics.SocketClosed(code)
	}
}

func (c *Client) setExpiresLocked(t time.Time) {
	if c.expiry != nil {
		c.expiry.Stop()
		c.expiry = nil
	}
	c.expiryGen++
	if t.IsZero() || c.closed || c.closing.Load() {
		return
	}
	gen := c.expiryGen
	c.expiry = time.AfterFunc(time.Until(t), func() {
		c.mu.Lock()
		if c.expiryGen == gen { // not re-armed meanwhile
			c.closeLocked(CloseTokenExpired, ReasonTokenExpired)
		}
		c.mu.Unlock()
	})
}

// start enqueues hello, goes live from seq (catching up from it: events committed
// since hello was read may have come before the socket was greeted), answers the
// connect-time resume and starts the writer and the expiry timer.
func (c *Client) start(seq int64, expires time.Time, since *int64) {
	hello, _ := json.Marshal(struct {
		Type    string `json:"type"`
		UserID  string `json:"user_id"`
		Seq     int64  `json:"seq"`
		Replica string `json:"replica,omitempty"`
	}{"hello", c.user, seq, c.hub.cfg.Replica})

	c.mu.Lock()
	c.known, c.lastSeq, c.base = seq, seq, seq
	c.enqueueLocked(hello)
	c.greeted = true
	c.hub.cfg.Metrics.CatchUp(CatchUpConnect)
	c.startCatchUpLocked()
	if since != nil {
		c.resumeLocked(*since)
	}
	c.setExpiresLocked(expires)
	c.wg.Add(1)
	go c.writeLoop()
	c.mu.Unlock()
}

// finish stops the socket's goroutines and timers and waits for them. After it, nothing
// touches conn.
func (c *Client) finish() {
	c.mu.Lock()
	c.closeLocked(0, "")
	c.closed = true
	if c.expiry != nil {
		c.expiry.Stop()
	}
	if len(c.queue) > 0 {
		c.hub.cfg.Metrics.FramesDropped(len(c.queue))
	}
	c.queue = nil
	c.mu.Unlock()
	c.wg.Wait()
}

// enqueueLocked appends data to the send queue. A full queue closes the socket as slow.
func (c *Client) enqueueLocked(data []byte) bool {
	if c.closed || c.closing.Load() {
		c.hub.cfg.Metrics.FramesDropped(1)
		return false
	}
	if len(c.queue) >= c.hub.cfg.QueueSize {
		c.log.Warn("realtime: closing slow socket", slog.Int("queued", len(c.queue)))
		c.hub.cfg.Metrics.FramesDropped(1)
		c.closeLocked(CloseSlowConsumer, ReasonSlowConsumer)
		return false
	}
	c.queue = append(c.queue, data)
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return true
}

// deliver handles a live publication from the broker (see the Client comment).
func (c *Client) deliver(p Publication) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.greeted {
		return
	}
	if p.Seq <= 0 {
		c.enqueueLocked(p.Data)
		return
	}
	c.known = max(c.known, p.Seq)
	switch {
	case c.catching:
		c.dirty = true
	case p.Seq <= c.lastSeq:
		// duplicate
	case p.Seq == c.lastSeq+1:
		if c.enqueueLocked(p.Data) {
			c.lastSeq = p.Seq
		}
	default:
		c.hub.cfg.Metrics.CatchUp(CatchUpGap)
		c.startCatchUpLocked() // gap: a publication was lost
	}
}

// requestCatchUp makes the client read the log again (the broker may have lost messages).
func (c *Client) requestCatchUp(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.greeted {
		c.hub.cfg.Metrics.CatchUp(reason)
		c.startCatchUpLocked()
	}
}

// catchUpTo makes the client read the log if it has not sent seq yet: the hub's log
// check found seq committed but never delivered.
func (c *Client) catchUpTo(seq int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.greeted && c.lastSeq < seq {
		c.known = max(c.known, seq)
		c.hub.cfg.Metrics.CatchUp(CatchUpLog)
		c.startCatchUpLocked()
	}
}

func (c *Client) startCatchUpLocked() {
	c.catching = true
	c.dirty = true
	if c.running || c.closed || c.closing.Load() {
		return
	}
	c.running = true
	c.wg.Add(1)
	go c.catchUp()
}

// handleResume answers {"type":"resume","since":S}.
func (c *Client) handleResume(raw json.RawMessage) {
	since, ok := parseSince(raw)
	if !ok {
		c.Close(CloseBadRequest, ReasonBadRequest)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.resumeLocked(since)
}

// resumeLocked answers a resume from since (see the Client comment). A resume that
// comes while another is pending replaces it: one answer, for the latest since.
func (c *Client) resumeLocked(since int64) {
	replayed := 0
	if c.resume != nil {
		replayed = c.resume.replayed
	}
	switch {
	case since > c.lastSeq:
		// The client has more than this socket sent: continue after since.
		c.fills = nil
		c.lastSeq, c.base = since, since
		c.verify = since > c.known
	case since >= c.base:
		// Nothing is missing but what the fills still send (they go on: what they
		// send was never sent on this socket).
		if c.resume == nil {
			c.enqueueLocked(resumedFrame(since, c.lastSeq, 0))
			return
		}
		c.resume = &pendingResume{since: since, replayed: replayed}
		return
	default:
		// Events since+1..base were never sent on this socket.
		c.fills = append(c.fills, seqRange{since, c.base})
		c.base = since
	}
	c.hub.cfg.Metrics.CatchUp(CatchUpResume)
	c.resume = &pendingResume{since: since, replayed: replayed}
	c.startCatchUpLocked()
}

func resumedFrame(since, seq int64, replayed int) []byte {
	b, _ := json.Marshal(struct {
		Type     string `json:"type"`
		Since    int64  `json:"since"`
		Seq      int64  `json:"seq"`
		Replayed int    `json:"replayed"`
	}{"resumed", since, seq, replayed})
	return b
}

func resyncFrame(seq int64) []byte {
	b, _ := json.Marshal(struct {
		Type string `json:"type"`
		Seq  int64  `json:"seq"`
	}{"resync", seq})
	return b
}

// catchUp sends the fills and reads the log until the client is level with it (see the
// Client comment).
func (c *Client) catchUp() {
	defer c.wg.Done()
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("realtime: catch-up panicked", slog.Any("panic", r), slog.String("stack", string(debug.Stack())))
			c.mu.Lock()
			c.running = false
			c.closeLocked(CloseInternalError, ReasonInternalError)
			c.mu.Unlock()
		}
	}()
	delay := backoffMin
	for {
		c.mu.Lock()
		if c.closed || c.closing.Load() {
			c.running = false
			c.mu.Unlock()
			return
		}
		var more bool
		var err error
		if len(c.fills) > 0 {
			fill := c.fills[0]
			c.mu.Unlock()
			more, err = c.fill(fill)
		} else {
			since, known, verify := c.lastSeq, c.known, c.verify
			c.dirty = false
			c.mu.Unlock()
			var r logRead
			r, err = c.readLog(since, known, verify)
			if err == nil {
				more = c.apply(r, since, known)
			}
		}
		if err != nil {
			if c.ctx.Err() != nil {
				c.stopCatchUp()
				return
			}
			c.log.Warn("realtime: catch-up from history failed, retrying", slog.Duration("in", delay), slog.Any("error", err))
			if !sleepCtx(c.ctx, delay) {
				c.stopCatchUp()
				return
			}
			delay = min(2*delay, backoffMax)
			continue
		}
		delay = backoffMin
		if !more {
			return
		}
	}
}

const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 5 * time.Second
)

func (c *Client) stopCatchUp() {
	c.mu.Lock()
	c.running = false
	c.mu.Unlock()
}

// fill sends the next page of f, the first fill. It reports whether the catch-up goes on.
func (c *Client) fill(f seqRange) (bool, error) {
	h := c.hub
	if err := h.reads.Acquire(c.ctx, 1); err != nil {
		return false, err
	}
	page, err := h.history.Since(c.ctx, c.user, f.from, int(min(int64(h.cfg.ReplayBatch), f.to-f.from)))
	h.reads.Release(1)
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.fills) == 0 || c.fills[0] != f {
		return true, nil // a resume changed the fills meanwhile
	}
	if len(page) == 0 || page[0].Seq != f.from+1 {
		// Pruned (only the oldest events are): the client must refetch.
		c.fills, c.resyncAfter = nil, true
		return true, nil
	}
	for _, p := range page {
		if p.Seq > f.to {
			break
		}
		if !c.replayLocked(p) {
			c.running = false
			return false, nil
		}
		if len(c.fills) == 0 || c.fills[0].from != f.from {
			return true, nil // changed while waiting for the writer
		}
		f.from = p.Seq
		c.fills[0].from = p.Seq
	}
	if f.from >= f.to {
		c.fills = c.fills[1:]
	}
	return true, nil
}

// replayLocked enqueues an event read from the log, first waiting for room in the queue
// rather than overflowing it (a long replay is not a slow client). It reports false if
// the socket is closing.
func (c *Client) replayLocked(p Publication) bool {
	room := max(1, c.hub.cfg.QueueSize*3/4) // leave room for ephemeral frames and pongs
	for len(c.queue) >= room {
		if c.closed || c.closing.Load() || c.ctx.Err() != nil {
			return false
		}
		c.mu.Unlock()
		select {
		case <-c.drained:
		case <-c.ctx.Done():
		}
		c.mu.Lock()
	}
	if c.closed || c.closing.Load() || c.ctx.Err() != nil {
		return false
	}
	if !c.enqueueLocked(p.Data) {
		return false
	}
	c.hub.cfg.Metrics.EventsReplayed(1)
	if c.resume != nil {
		c.resume.replayed++
	}
	return true
}

// logRead is what readLog found after since.
type logRead struct {
	page []Publication
	// pruned: events after since are gone from the log; behind: the log ends before
	// since (asked with verify). last is the log's latest seq then.
	pruned, behind bool
	last           int64
}

// readLog reads the page after since. With verify, since is a client's claim: an empty
// page is checked against the log's latest seq.
func (c *Client) readLog(since, known int64, verify bool) (logRead, error) {
	h := c.hub
	if err := h.reads.Acquire(c.ctx, 1); err != nil {
		return logRead{}, err
	}
	defer h.reads.Release(1)
	page, err := h.history.Since(c.ctx, c.user, since, h.cfg.ReplayBatch)
	if err != nil {
		return logRead{}, err
	}
	if len(page) > 0 && page[0].Seq <= since+1 {
		return logRead{page: page}, nil
	}
	if len(page) == 0 && known <= since && !verify {
		return logRead{}, nil // level with everything we know of
	}
	// The log starts after since+1, or is empty while we know of later events (or were
	// told of since). Read the latest seq first, then the page again: if events up to
	// last existed and are still not returned, they were pruned (pruning only removes
	// the oldest events).
	last, err := h.history.LastSeq(c.ctx, c.user)
	if err != nil {
		return logRead{}, err
	}
	if last < since && verify {
		return logRead{behind: true, last: last}, nil
	}
	if last <= since {
		return logRead{last: last}, nil // the log has nothing after since: nothing to do
	}
	page, err = h.history.Since(c.ctx, c.user, since, h.cfg.ReplayBatch)
	if err != nil {
		return logRead{}, err
	}
	if len(page) > 0 && page[0].Seq <= since+1 {
		return logRead{page: page}, nil
	}
	return logRead{pruned: true, last: last}, nil
}

// apply enqueues a page read by catchUp from since. It reports whether the catch-up
// goes on.
func (c *Client) apply(r logRead, since, known int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lastSeq != since || len(c.fills) > 0 {
		return true // a resume moved lastSeq or added a fill meanwhile: read again
	}
	if r.pruned || r.behind {
		c.hub.cfg.Metrics.Resync()
		c.enqueueLocked(resyncFrame(r.last))
		c.lastSeq, c.base = r.last, r.last
		c.known = max(c.known, r.last)
		c.verify = false
		c.resume, c.resyncAfter = nil, false // resync answers them
		c.dirty = true                       // read once more after last
		return true
	}
	c.verify = false // the log reaches since
	if len(r.page) == 0 && known > since && c.known == known {
		c.known = since // the log has nothing after since, whatever we heard: stop waiting for it
	}
	for _, p := range r.page {
		if p.Seq <= c.lastSeq {
			continue
		}
		if !c.replayLocked(p) {
			c.running = false
			return false
		}
		c.lastSeq = p.Seq
	}
	if len(r.page) >= c.hub.cfg.ReplayBatch || c.dirty || len(c.fills) > 0 {
		return true
	}
	switch {
	case c.resyncAfter:
		c.hub.cfg.Metrics.Resync()
		c.enqueueLocked(resyncFrame(c.lastSeq))
		c.base, c.resyncAfter, c.resume = c.lastSeq, false, nil
	case c.resume != nil:
		c.enqueueLocked(resumedFrame(c.resume.since, c.lastSeq, c.resume.replayed))
		c.resume = nil
	}
	c.catching = false
	c.running = false
	return false
}

// writeLoop is the socket's only writer: it drains the queue and sends pings, and on
// close sends the close frame and ends the read loop.
func (c *Client) writeLoop() {
	defer c.wg.Done()
	cfg := &c.hub.cfg
	ping := time.NewTicker(cfg.PingInterval)
	defer ping.Stop()
	var batch [][]byte
	for {
		select {
		case <-c.closeCh:
			c.writeClose()
			return
		case <-ping.C:
			if err := c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(cfg.WriteTimeout)); err != nil {
				c.writeFailed(err)
				return
			}
		case <-c.wake:
			c.mu.Lock()
			batch, c.queue = c.queue, batch[:0]
			c.mu.Unlock()
			select {
			case c.drained <- struct{}{}:
			default:
			}
			sent, err := c.writeBatch(batch)
			if sent > 0 {
				c.hub.cfg.Metrics.FramesSent(sent)
			}
			if sent < len(batch) {
				c.hub.cfg.Metrics.FramesDropped(len(batch) - sent)
			}
			clear(batch)
			if err != nil {
				c.writeFailed(err)
				return
			}
		}
	}
}

// writeBatch writes frames until the socket starts closing or a write fails, and
// returns how many it wrote. The frames go out framed by the hub, several in one
// write (see writeCoalesced), when the Conn exposes its net.Conn.
func (c *Client) writeBatch(batch [][]byte) (int, error) {
	if nc, ok := c.conn.(interface{ NetConn() net.Conn }); ok {
		if c.closing.Load() {
			return 0, nil
		}
		return c.writeCoalesced(nc.NetConn(), batch)
	}
	for i, data := range batch {
		if c.closing.Load() {
			return i, nil
		}
		_ = c.conn.SetWriteDeadline(time.Now().Add(c.hub.cfg.WriteTimeout))
		if err := c.conn.WriteMessage(websocket.TextMessage, data); err != nil {
			return i, err
		}
	}
	return len(batch), nil
}

// maxCoalesced bounds the bytes framed into one write.
const maxCoalesced = 64 << 10

// writeCoalesced frames batch as WebSocket text frames (server frames are not
// masked) and writes them with as few writes as possible: a socket that fell
// behind (its queue holds many frames) costs one syscall per write, not per
// frame, and so catches up instead of falling further behind. Writing to the
// net.Conn directly is safe next to the websocket library's own writes (pongs
// and close replies from the read goroutine, pings from this goroutine): each
// is one Write call, and a net.Conn serializes Write calls whole.
func (c *Client) writeCoalesced(nc net.Conn, batch [][]byte) (int, error) {
	buf := c.wbuf[:0]
	sent, start := 0, 0
	flush := func(end int) error {
		if len(buf) == 0 {
			return nil
		}
		_ = nc.SetWriteDeadline(time.Now().Add(c.hub.cfg.WriteTimeout))
		if _, err := nc.Write(buf); err != nil {
			return err
		}
		sent += end - start
		start = end
		buf = buf[:0]
		return nil
	}
	for i, data := range batch {
		if len(buf) > 0 && len(buf)+len(data)+10 > maxCoalesced {
			if err := flush(i); err != nil {
				return sent, err
			}
		}
		buf = appendTextFrame(buf, data)
	}
	err := flush(len(batch))
	if cap(buf) <= maxCoalesced+(16<<10) {
		c.wbuf = buf[:0]
	}
	return sent, err
}

// appendTextFrame appends data as one unmasked, final text frame (RFC 6455 5.2).
func appendTextFrame(b, data []byte) []byte {
	n := len(data)
	switch {
	case n < 126:
		b = append(b, 0x81, byte(n))
	case n <= 0xffff:
		b = append(b, 0x81, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x81, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, data...)
}

// writeClose sends the close frame, if a code was given, and ends the read loop after
// closeGrace (time for the peer to answer the close) or at once.
func (c *Client) writeClose() {
	c.mu.Lock()
	code, reason := c.closeCode, c.closeReason
	c.mu.Unlock()
	until := time.Now()
	if code != 0 {
		msg := websocket.FormatCloseMessage(code, reason)
		if err := c.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(c.hub.cfg.WriteTimeout)); err == nil {
			until = time.Now().Add(closeGrace)
		}
	}
	_ = c.conn.SetReadDeadline(until)
}

func (c *Client) writeFailed(err error) {
	if !c.closing.Load() {
		c.log.Debug("realtime: write failed", slog.Any("error", err))
	}
	c.Close(0, "")
	_ = c.conn.SetReadDeadline(time.Now())
}

// extendReadDeadline keeps a live peer's socket open. Once closing, the writer owns the
// read deadline.
func (c *Client) extendReadDeadline() {
	if c.closing.Load() {
		return
	}
	cfg := &c.hub.cfg
	_ = c.conn.SetReadDeadline(time.Now().Add(cfg.PingInterval + cfg.PongTimeout))
	if c.closing.Load() { // the writer may have set a shorter deadline meanwhile
		_ = c.conn.SetReadDeadline(time.Now().Add(closeGrace))
	}
}

// readLoop reads frames until the socket fails or closes. Once closing, frames are
// read and discarded until the peer's close frame or the deadline.
func (c *Client) readLoop(fh FrameHandler) {
	c.conn.SetPongHandler(func(string) error {
		c.extendReadDeadline()
		return nil
	})
	c.extendReadDeadline()
	limited := false
	for {
		typ, data, err := c.conn.ReadMessage()
		if err != nil {
			if !c.closing.Load() && !websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway, websocket.CloseNoStatusReceived) {
				c.log.Debug("realtime: read failed", slog.Any("error", err))
			}
			return
		}
		if c.closing.Load() {
			continue
		}
		c.extendReadDeadline()
		if !c.limiter.Allow() {
			c.hub.cfg.Metrics.FrameRateLimited()
			if !limited {
				limited = true
				c.Send(ErrorFrame(ErrorRateLimited, "too many frames, frame dropped"))
			}
			continue
		}
		limited = false
		c.handleFrame(typ, data, fh)
	}
}

// inFrame is a client frame as the hub reads it: its type and, for resume, the raw since.
type inFrame struct {
	Type  string          `json:"type"`
	Since json.RawMessage `json:"since"`
}

// parseFrame reads a client frame (message type typ, payload data): a JSON text frame that
// is an object with a non-empty type. Otherwise it returns the error message to send.
// It is the read loop's parser, kept pure for the fuzz tests.
func parseFrame(typ int, data []byte) (inFrame, string) {
	if typ != websocket.TextMessage {
		return inFrame{}, "frames must be JSON text"
	}
	var f inFrame
	if err := json.Unmarshal(data, &f); err != nil || f.Type == "" {
		return inFrame{}, "a frame must be a JSON object with a type"
	}
	return f, ""
}

// parseSince reads the since of a resume frame: a non-negative JSON integer.
// A null is not one (encoding/json would leave since at 0: a full replay).
func parseSince(raw json.RawMessage) (int64, bool) {
	var since int64
	if len(raw) == 0 || string(raw) == "null" || json.Unmarshal(raw, &since) != nil || since < 0 {
		return 0, false
	}
	return since, true
}

func (c *Client) handleFrame(typ int, data []byte, fh FrameHandler) {
	f, bad := parseFrame(typ, data)
	if bad != "" {
		c.Send(ErrorFrame(ErrorBadRequest, bad))
		return
	}
	switch f.Type {
	case "ping":
		c.Send(pongFrame)
	case "resume":
		c.handleResume(f.Since)
	default:
		if fh == nil {
			c.Send(ErrorFrame(ErrorBadRequest, "unknown frame type "+quote(f.Type)))
			return
		}
		c.callHandler(fh, f.Type, data)
	}
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func (c *Client) callHandler(fh FrameHandler, typ string, raw []byte) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("realtime: frame handler panicked", slog.String("type", typ), slog.Any("panic", r), slog.String("stack", string(debug.Stack())))
			c.Close(CloseInternalError, ReasonInternalError)
		}
	}()
	fh.HandleFrame(c, typ, raw)
}
