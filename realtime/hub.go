package realtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// Config tunes a Hub. Zero values mean the documented defaults (as do negative ones).
type Config struct {
	// QueueSize is the per-socket send queue, in messages. A socket whose queue is full
	// when a message arrives is closed with CloseSlowConsumer. Default 1024.
	QueueSize int
	// WriteTimeout bounds every write to a socket. Default 10s.
	WriteTimeout time.Duration
	// PingInterval is the period of the server's WebSocket ping. Default 25s.
	PingInterval time.Duration
	// PongTimeout: a socket from which nothing (frame or pong) was read for
	// PingInterval+PongTimeout is dropped as dead. Default 10s.
	PongTimeout time.Duration
	// MaxMessageSize is the inbound frame limit in bytes; fasthttp/websocket closes a
	// socket sending more with 1009. Default 64 KiB.
	MaxMessageSize int64
	// Replica names this replica in every socket's hello ("replica"); empty: not sent.
	Replica string
	// MaxConnsPerUser caps one user's sockets on this replica (CloseTooManyConnections).
	// Default 32.
	MaxConnsPerUser int
	// MaxConns caps the sockets of this replica (CloseReplicaFull). Default 20000.
	MaxConns int
	// RateLimit is the inbound frame rate allowed per socket, in frames per second.
	// Default 20.
	RateLimit float64
	// RateBurst is the inbound frame burst allowed per socket. Default 40.
	RateBurst int
	// ReplayBatch is the page size of History.Since reads. Default 500.
	ReplayBatch int
	// GapWait is how long a user's publication that arrived after a seq gap is held for
	// the missing one before the sockets read the event log instead (see sequencer).
	// Default 1s.
	GapWait time.Duration
	// LogCheck is the period of the hub's check of the event log for events committed
	// but never delivered (a writer that died between commit and publish, a publish that
	// failed): every LogCheck the hub reads the latest seq of every user with a socket
	// here, in batches; an event still undelivered at the next check is read from the
	// log by the user's sockets. Such an event reaches them within 2*LogCheck. Default 1s.
	LogCheck time.Duration
	// Metrics receives the hub's counts (frames, closes, catch-ups, broker calls).
	// Default: none (NopMetrics).
	Metrics Metrics
}

func (c Config) withDefaults() Config {
	if c.QueueSize <= 0 {
		c.QueueSize = 1024
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 25 * time.Second
	}
	if c.PongTimeout <= 0 {
		c.PongTimeout = 10 * time.Second
	}
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = 64 << 10
	}
	if c.MaxConnsPerUser <= 0 {
		c.MaxConnsPerUser = 32
	}
	if c.MaxConns <= 0 {
		c.MaxConns = 20000
	}
	if c.RateLimit <= 0 {
		c.RateLimit = 20
	}
	if c.RateBurst <= 0 {
		c.RateBurst = 40
	}
	if c.ReplayBatch <= 0 {
		c.ReplayBatch = 500
	}
	if c.GapWait <= 0 {
		c.GapWait = time.Second
	}
	if c.LogCheck <= 0 {
		c.LogCheck = time.Second
	}
	if c.Metrics == nil {
		c.Metrics = NopMetrics{}
	}
	return c
}

const (
	numShards   = 32
	numSubLocks = 256
	// brokerTimeout bounds the broker calls the hub makes on its own (subscribe and
	// unsubscribe a user's channel).
	brokerTimeout = 5 * time.Second
	// userChannelPrefix starts the broker channel of a user.
	userChannelPrefix = "user:"
	// historyReads caps the History reads one hub runs at once: after a broker reconnect
	// every socket catches up, and the event log should not see thousands of queries at once.
	historyReads = 16
)

// Hub holds the WebSockets of one replica and delivers every user's publications to
// them. Create it with NewHub; it is safe for concurrent use.
type Hub struct {
	broker  Broker
	history History
	cfg     Config
	log     *slog.Logger
	// id tells this hub's ephemeral publications apart on the broker: they carry -id as
	// their seq (any seq <= 0 is ephemeral to every hub).
	id int64

	shards [numShards]hubShard
	// subLocks serialize a user's first register (broker Subscribe) against their last
	// unregister (broker Unsubscribe). They are not the shard locks: the broker's delivery
	// goroutine takes shard read locks, and a Subscribe waiting for its confirmation under
	// a shard lock would wait for that goroutine.
	subLocks [numSubLocks]sync.Mutex

	reads *semaphore.Weighted // see historyReads

	conns    atomic.Int64
	stopping atomic.Bool
	// bg lives until Shutdown: the log check's context.
	bg       context.Context
	bgCancel context.CancelFunc
	checkMu  sync.Mutex // guards checking
	checking bool       // the log check runs (see logcheck.go)
	checkWG  sync.WaitGroup
	control  atomic.Pointer[func(data []byte)] // see ListenControl
	// servingMu orders serving.Add (in Serve) before serving.Wait (in Shutdown).
	servingMu sync.Mutex
	serving   sync.WaitGroup
}

type hubShard struct {
	mu    sync.RWMutex
	users map[string]*userEntry
}

// userEntry is one user's sockets on this replica. Lock order: the shard lock, then
// mu, then a Client's lock.
type userEntry struct {
	clients map[*Client]struct{} // under the shard lock
	mu      sync.Mutex           // orders the user's sequenced deliveries; guards seq, behind
	seq     sequencer
	behind  int64 // the log's seq the previous log check found undelivered (0: none)
}

// fanOut hands p to every socket of the user (shard lock held).
func (u *userEntry) fanOut(p Publication) {
	for c := range u.clients {
		c.deliver(p)
	}
}

// NewHub returns a Hub delivering through b, catching clients up from h, and registers
// the hub as b's event handler. log may be nil.
func NewHub(b Broker, h History, cfg Config, log *slog.Logger) *Hub {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hub := &Hub{broker: b, history: h, cfg: cfg.withDefaults(), log: log, reads: semaphore.NewWeighted(historyReads),
		id: 1 + rand.Int64N(math.MaxInt64-1)}
	for i := range hub.shards {
		hub.shards[i].users = make(map[string]*userEntry)
	}
	hub.bg, hub.bgCancel = context.WithCancel(context.Background())
	b.RegisterEventHandler(brokerEvents{hub})
	return hub
}

// Conns returns the number of open sockets on this replica.
func (h *Hub) Conns() int { return int(h.conns.Load()) }

// Publish sends p to every socket of user on every replica: to this replica's sockets
// at once, to the others through the broker (channel "user:"+user, to which the broker
// adds its prefix). The copy the broker brings back to this replica is dropped: a
// sequenced one by the user's sequencer (its seq went out already), an ephemeral one
// by its origin. On a broker that can (RedisBroker), a sequenced publication is
// handed over without waiting for the broker's answer: the broker keeps the order of
// every publish, so a publication made after it still reaches the other replicas
// after it, and a failure is logged (nothing is lost: see below). Otherwise, if the
// broker publish fails, the error is returned; the other
// replicas' sockets then read a sequenced publication from the log after a gap
// (Config.GapWait) or at their hub's log check (Config.LogCheck), and miss an
// ephemeral one.
//
// Sequenced publications (Seq > 0) must be published only after the transaction that
// wrote them to the event log committed: the hub relies on finding in History every
// event it has seen published.
func (h *Hub) Publish(ctx context.Context, user string, p Publication) error {
	h.deliver(user, p)
	wire := p
	if p.Seq <= 0 {
		wire.Seq = -h.id
	}
	start := time.Now()
	if ab, ok := h.broker.(asyncBroker); ok && p.Seq > 0 {
		ab.PublishAsync(userChannel(user), encodePublication(wire), func(err error) {
			h.cfg.Metrics.BrokerPublish(time.Since(start), err)
			if err != nil && !errors.Is(err, ErrBrokerClosed) && !errors.Is(err, errPublishQueueFull) { // the broker logs drops
				h.log.Warn("realtime: publish event", slog.String("user_id", user), slog.Int64("seq", p.Seq), slog.Any("error", err))
			}
		})
		return nil
	}
	err := h.broker.Publish(ctx, userChannel(user), encodePublication(wire))
	h.cfg.Metrics.BrokerPublish(time.Since(start), err)
	if err != nil {
		return fmt.Errorf("publish to user %s: %w", user, err)
	}
	return nil
}

// asyncBroker is a Broker that can publish without waiting for the answer, keeping
// the order of all its publishes (RedisBroker).
type asyncBroker interface {
	PublishAsync(channel string, data []byte, done func(error))
}

// Shutdown closes every socket with CloseGoingAway and waits, up to ctx, for all Serve
// calls to return. Serve calls made after Shutdown close their socket at once.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.servingMu.Lock()
	h.stopping.Store(true)
	h.servingMu.Unlock()
	h.checkMu.Lock()
	h.bgCancel() // ends the log check
	h.checkMu.Unlock()

	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for _, u := range sh.users {
			for c := range u.clients {
				c.Close(CloseGoingAway, ReasonGoingAway)
			}
		}
		sh.mu.RUnlock()
	}

	done := make(chan struct{})
	go func() { // exits when the last Serve returns, even after ctx expired
		h.serving.Wait()
		h.checkWG.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("realtime shutdown: %d sockets still open: %w", h.Conns(), ctx.Err())
	}
}

func userChannel(user string) string { return userChannelPrefix + user }

func (h *Hub) shard(user string) *hubShard {
	return &h.shards[fnv32(user)%numShards]
}

func (h *Hub) subLock(user string) *sync.Mutex {
	return &h.subLocks[fnv32(user)%numSubLocks]
}

func fnv32(s string) uint32 {
	hash := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		hash ^= uint32(s[i])
		hash *= 16777619
	}
	return hash
}

// register adds c to the hub, subscribing the user's broker channel if c is the user's
// first socket on this replica. It returns a close code (and reason) if c is refused.
func (h *Hub) register(ctx context.Context, c *Client) (int, string) {
	if h.conns.Add(1) > int64(h.cfg.MaxConns) {
		h.conns.Add(-1)
		return CloseReplicaFull, ReasonReplicaFull
	}
	sl := h.subLock(c.user)
	sl.Lock()
	defer sl.Unlock()

	sh := h.shard(c.user)
	sh.mu.Lock()
	u := sh.users[c.user]
	if u != nil && len(u.clients) >= h.cfg.MaxConnsPerUser {
		sh.mu.Unlock()
		h.conns.Add(-1)
		return CloseTooManyConnections, ReasonTooManyConnections
	}
	if u == nil {
		u = &userEntry{clients: make(map[*Client]struct{})}
		sh.users[c.user] = u
	}
	u.clients[c] = struct{}{}
	first := len(u.clients) == 1
	sh.mu.Unlock()

	if first {
		sctx, cancel := context.WithTimeout(ctx, brokerTimeout)
		err := h.broker.Subscribe(sctx, userChannel(c.user))
		cancel()
		if err != nil {
			h.log.Error("realtime: subscribe user channel", slog.String("user", c.user), slog.Any("error", err))
			h.remove(c) // still under the sub lock: nobody else subscribed meanwhile
			h.conns.Add(-1)
			return CloseInternalError, ReasonInternalError
		}
	}
	h.ensureLogCheck()
	return 0, ""
}

// unregister removes c, unsubscribing the user's channel if c was their last socket.
func (h *Hub) unregister(ctx context.Context, c *Client) {
	sl := h.subLock(c.user)
	sl.Lock()
	defer sl.Unlock()
	last := h.remove(c)
	h.conns.Add(-1)
	if last {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), brokerTimeout)
		if err := h.broker.Unsubscribe(uctx, userChannel(c.user)); err != nil {
			h.log.Warn("realtime: unsubscribe user channel", slog.String("user", c.user), slog.Any("error", err))
		}
		cancel()
	}
}

// remove deletes c from its shard and reports whether it was the user's last socket.
func (h *Hub) remove(c *Client) bool {
	sh := h.shard(c.user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	u := sh.users[c.user]
	if u == nil {
		return false
	}
	delete(u.clients, c)
	if len(u.clients) > 0 {
		return false
	}
	delete(sh.users, c.user)
	u.mu.Lock()
	u.seq.stop()
	u.mu.Unlock()
	return true
}

// deliver hands p to every local socket of user, sequenced publications in seq order
// (see sequencer). It never blocks: enqueueing is non-blocking and a full queue closes
// that socket only.
func (h *Hub) deliver(user string, p Publication) {
	sh := h.shard(user)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	u := sh.users[user]
	switch {
	case u == nil:
	case p.Seq <= 0:
		u.fanOut(p)
	default:
		u.mu.Lock()
		held := len(u.seq.held)
		if u.seq.push(p, u.fanOut) {
			h.armGap(user, u)
		}
		if len(u.seq.held) > held {
			h.cfg.Metrics.EventHeld()
		}
		u.mu.Unlock()
	}
}

// started tells the user's sequencer the seq a socket was greeted with.
func (h *Hub) started(user string, seq int64) {
	sh := h.shard(user)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if u := sh.users[user]; u != nil {
		u.mu.Lock()
		if u.seq.start(seq, u.fanOut) {
			h.armGap(user, u)
		}
		u.mu.Unlock()
	}
}

// armGap (u.mu held) starts the wait for the gap before u's held publications.
func (h *Hub) armGap(user string, u *userEntry) {
	u.seq.arm(h.cfg.GapWait, func(gen uint64) { h.gapExpired(user, u, gen) })
}

// gapExpired gives up on a gap: the held publications go out, and the sockets read the
// missing ones from the log.
func (h *Hub) gapExpired(user string, u *userEntry, gen uint64) {
	sh := h.shard(user)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if sh.users[user] != u {
		return // the user's last socket left
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.seq.gen != gen {
		return // released or re-armed meanwhile
	}
	after, next := u.seq.high, int64(0)
	if len(u.seq.held) > 0 {
		next = u.seq.held[0].Seq
	}
	n := u.seq.flush(u.fanOut)
	h.cfg.Metrics.GapExpired()
	h.log.Warn("realtime: seq gap not closed in time, sockets read the event log",
		slog.String("user", user), slog.Int64("after", after), slog.Int64("next", next),
		slog.Int("released", n), slog.Duration("waited", h.cfg.GapWait))
}

// resubscribed releases every held publication and makes every local socket catch up
// from History.
func (h *Hub) resubscribed() {
	h.cfg.Metrics.BrokerResubscribed()
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for _, u := range sh.users {
			u.mu.Lock()
			u.seq.flush(u.fanOut)
			u.mu.Unlock()
			for c := range u.clients {
				c.requestCatchUp(CatchUpResubscribed)
			}
		}
		sh.mu.RUnlock()
	}
}

// helloSeq reads the user's latest seq for hello, retrying briefly: a socket cannot be
// served without it.
func (h *Hub) helloSeq(ctx context.Context, user string) (int64, error) {
	delay := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		if err := h.reads.Acquire(ctx, 1); err != nil {
			return 0, err
		}
		seq, err := h.history.LastSeq(ctx, user)
		h.reads.Release(1)
		if err == nil {
			return seq, nil
		}
		if attempt == 3 || ctx.Err() != nil {
			return 0, fmt.Errorf("last seq of user %s: %w", user, err)
		}
		h.log.Warn("realtime: read last seq", slog.String("user", user), slog.Any("error", err))
		if !sleepCtx(ctx, delay) {
			return 0, ctx.Err()
		}
		delay *= 4
	}
}

// brokerEvents adapts the hub to BrokerEventHandler without exporting the methods on Hub.
type brokerEvents struct{ h *Hub }

func (e brokerEvents) HandlePublication(channel string, data []byte) {
	if channel == controlChannel {
		e.h.handleControl(data)
		return
	}
	user, ok := strings.CutPrefix(channel, userChannelPrefix)
	if !ok {
		return
	}
	e.h.cfg.Metrics.BrokerReceive()
	p, err := decodePublication(data)
	if err != nil {
		e.h.log.Warn("realtime: bad publication from broker", slog.String("channel", channel), slog.Any("error", err))
		return
	}
	if p.Seq <= 0 {
		if p.Seq == -e.h.id {
			return // this hub's own, delivered when it was published
		}
		p.Seq = 0
	}
	e.h.deliver(user, p)
}

func (e brokerEvents) HandleResubscribed() { e.h.resubscribed() }

// sleepCtx sleeps d and reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
