package realtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

var _ Broker = (*RedisBroker)(nil)

const (
	// redisChannelSize is the buffer of go-redis's message channel. go-redis drops a
	// message only after this buffer stayed full for 60s.
	redisChannelSize = 4096
	// ClusterBuckets is how many hash-tagged groups the user channels fall into on a
	// Redis Cluster: a user's channel is PREFIX + "{N}" + "user:" + id with N =
	// fnv32(channel) % ClusterBuckets, so a bucket's channels share one hash slot and one
	// sharded PubSub connection per replica (go-redis resubscribes a PubSub's channels
	// with one SSUBSCRIBE, which must not cross slots). The buckets' slots spread over
	// the masters, so at most ClusterBuckets shards carry publish traffic.
	ClusterBuckets = 128
	// publishTimeout bounds one publish to Redis: a request never waits longer for
	// Redis, and a publish that took this long marks its shard down.
	publishTimeout = time.Second
	// probeInterval is how often a shard marked down is probed.
	probeInterval = 250 * time.Millisecond
	// resubscribeDelay gathers the reconnects of several cluster buckets (a failed
	// master held many) into one HandleResubscribed.
	resubscribeDelay = 100 * time.Millisecond
	// maxNudges bounds the channels whose last skipped sequenced publication is
	// republished when Redis answers again.
	maxNudges = 100_000
	// maxQueuedPublishes bounds the publications of one bucket waiting for their pipeline.
	maxQueuedPublishes = 4096
	// maxPipeline is the most publications sent in one pipeline.
	maxPipeline = 512
	// dropLogInterval is the least time between two logs of dropped publications.
	dropLogInterval = 10 * time.Second
)

// RedisBroker is a Broker on Redis pub/sub, for many replicas, on a single Redis
// (PUBLISH/SUBSCRIBE, one PubSub connection for all channels) or a Redis Cluster
// (sharded pub/sub, SPUBLISH/SSUBSCRIBE, Redis 7.0+: a publication goes to the shard
// owning its channel's slot only, rather than to every node; one PubSub connection per
// bucket in use, see ClusterBuckets). One goroutine reads each PubSub connection.
//
// Redis pub/sub is at most once: go-redis reconnects and resubscribes on its own, and
// what was published meanwhile is lost. The broker notices a resubscription (a
// "subscribe" confirmation for a channel it already had confirmed) and calls
// BrokerEventHandler.HandleResubscribed, so the hub can catch up from its History.
//
// A request never waits on a Redis that is down: a publish pipeline is bounded by
// publishTimeout (a Publish also waits for the pipelines queued before its own; a
// PublishAsync waits for nothing), and one that fails while no other publish to its
// shard succeeded
// marks the shard (the whole Redis, or the cluster bucket) down. While it is down, publishes to it are skipped at once (Publish returns
// nil: what was skipped is in the event log, and the subscribers, whose connections to
// that Redis broke too, catch up when they resubscribe). A probe brings the shard back;
// then the last skipped sequenced publication of each channel is published again, so
// that a subscriber whose connection survived sees the gap and reads the log. The
// outage is logged once when it starts and once when it ends.
type RedisBroker struct {
	client  redis.UniversalClient
	cluster *redis.ClusterClient // nil on a single Redis
	prefix  string
	log     *slog.Logger

	// Every publish goes through its bucket's queue (see publishQueue).
	pmu           sync.Mutex
	pqueues       map[int]*publishQueue
	pclosed       bool
	dropped       int       // publications dropped on a full queue since droppedLogged
	droppedLogged time.Time // when drops were last logged

	closeOnce sync.Once
	closing   chan struct{} // closed by Close
	wg        sync.WaitGroup

	mu       sync.Mutex
	handler  BrokerEventHandler
	conns    map[int]*redisConn // by bucket (0 on a single Redis)
	resubDue bool               // a HandleResubscribed is scheduled

	// lastOK is when a publish to each Redis node last succeeded (unix ns, by address;
	// "" on a single Redis): a failed publish marks its bucket down only if its node
	// answered no publish while it was pending, so a Redis that is slow (but answers)
	// is not taken for one that is down.
	lastOK sync.Map // string -> *atomic.Int64

	hmu      sync.Mutex
	down     map[int]*downShard // shards whose publishes are skipped, by bucket
	downAt   time.Time          // when the first of them went down
	skipped  int                // publishes skipped in the current outage
	nudgeLen int                // channels in the down shards' nudges
}

// redisConn is one PubSub connection and what is subscribed on it.
type redisConn struct {
	ready  chan struct{} // closed once pubsub and msgs are set
	pubsub *redis.PubSub
	msgs   <-chan any
	subs   map[string]*redisSub // by wire channel name, under RedisBroker.mu
	// gen counts reconnects seen. A confirmation for a confirmed channel whose gen equals
	// gen starts a new reconnect (gen++ and one HandleResubscribed); the confirmations
	// of the other channels in the same reconnect only catch up with gen.
	gen uint64
}

type redisSub struct {
	confirmed bool
	permanent bool // the cluster bucket's anchor, never unsubscribed
	gen       uint64
	waiters   []chan struct{}
}

// downShard is a shard whose publishes are skipped until a probe answers.
type downShard struct {
	nudges map[string][]byte // wire channel -> its last skipped sequenced publication
}

// NewRedisBroker returns a broker publishing and subscribing through client, with every
// channel name prefixed by prefix (e.g. "evo:"), and starts its read goroutine; go-redis
// connects the PubSub connection in the background (and keeps reconnecting). When client
// is a *redis.ClusterClient the broker uses sharded pub/sub. Call Close to stop it.
// The client should have ContextTimeoutEnabled, or go-redis ignores publishTimeout
// and waits for its own read timeout.
func NewRedisBroker(client redis.UniversalClient, prefix string, log *slog.Logger) (*RedisBroker, error) {
	if client == nil {
		return nil, errors.New("realtime: redis broker: nil client")
	}
	if strings.ContainsAny(prefix, "{}") {
		return nil, fmt.Errorf("realtime: redis broker: prefix %q holds a brace (hash tags are the broker's)", prefix)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &RedisBroker{
		client:  client,
		prefix:  prefix,
		log:     log,
		closing: make(chan struct{}),
		conns:   make(map[int]*redisConn),
		down:    make(map[int]*downShard),
		pqueues: make(map[int]*publishQueue),
	}
	b.cluster, _ = client.(*redis.ClusterClient)
	if b.cluster == nil {
		// Subscribe with no channels returns a PubSub without connecting.
		c := &redisConn{ready: make(chan struct{}), subs: make(map[string]*redisSub)}
		c.pubsub = client.Subscribe(context.Background())
		b.start(c)
		b.conns[0] = c
	}
	return b, nil
}

// start begins reading c's PubSub.
func (b *RedisBroker) start(c *redisConn) {
	c.msgs = c.pubsub.ChannelWithSubscriptions(redis.WithChannelSize(redisChannelSize))
	b.wg.Go(func() { b.run(c) })
	close(c.ready)
}

// Close sends the publications already made, closes the PubSub connections and waits
// for their read goroutines (and the probes) to return. Subscribe calls still waiting
// return ErrBrokerClosed, as do publishes made after Close.
func (b *RedisBroker) Close() error {
	var err error
	b.closeOnce.Do(func() {
		b.closePublishQueues() // the publications already made go out first
		// Under both locks: no conn or probe starts after this.
		b.mu.Lock()
		b.hmu.Lock()
		close(b.closing)
		b.hmu.Unlock()
		conns := make([]*redisConn, 0, len(b.conns))
		for _, c := range b.conns {
			conns = append(conns, c)
		}
		b.mu.Unlock()
		for _, c := range conns {
			<-c.ready
			err = errors.Join(err, c.pubsub.Close())
		}
	})
	b.wg.Wait()
	return err
}

// RegisterEventHandler implements Broker.
func (b *RedisBroker) RegisterEventHandler(h BrokerEventHandler) {
	b.mu.Lock()
	b.handler = h
	b.mu.Unlock()
}

// bucket returns the cluster bucket of a hub channel (0 on a single Redis).
func (b *RedisBroker) bucket(channel string) int {
	if b.cluster == nil {
		return 0
	}
	return int(fnv32(channel) % ClusterBuckets)
}

// wire returns the Redis channel name of a hub channel.
func (b *RedisBroker) wire(channel string) string {
	if b.cluster == nil {
		return b.prefix + channel
	}
	return b.bucketTag(b.bucket(channel)) + channel
}

// bucketTag starts the names of bucket's channels: the prefix and the hash tag.
func (b *RedisBroker) bucketTag(bucket int) string {
	return b.prefix + "{" + strconv.Itoa(bucket) + "}"
}

// anchor is the channel every bucket's PubSub keeps subscribed, so that go-redis always
// (re)connects it to the node owning the bucket's slot. Nothing is published on it.
func (b *RedisBroker) anchor(bucket int) string { return b.bucketTag(bucket) + "anchor" }

// hubChannel is the inverse of wire.
func (b *RedisBroker) hubChannel(wire string) (string, bool) {
	rest, ok := strings.CutPrefix(wire, b.prefix)
	if !ok || b.cluster == nil {
		return rest, ok
	}
	if !strings.HasPrefix(rest, "{") {
		return "", false
	}
	i := strings.IndexByte(rest, '}')
	if i < 0 {
		return "", false
	}
	return rest[i+1:], true
}

// conn returns the PubSub connection of bucket, opening it on first use (cluster).
func (b *RedisBroker) conn(ctx context.Context, bucket int) (*redisConn, error) {
	b.mu.Lock()
	select {
	case <-b.closing:
		b.mu.Unlock()
		return nil, ErrBrokerClosed
	default:
	}
	c := b.conns[bucket]
	if c != nil {
		b.mu.Unlock()
		<-c.ready
		return c, nil
	}
	anchor := b.anchor(bucket)
	c = &redisConn{ready: make(chan struct{}), subs: map[string]*redisSub{anchor: {permanent: true}}}
	b.conns[bucket] = c
	b.mu.Unlock()
	// The anchor is subscribed before the channel reader starts (its health check
	// would otherwise connect to a random node). An error here is retried by go-redis.
	c.pubsub = b.cluster.SSubscribe(ctx, anchor)
	b.start(c)
	return c, nil
}

// Subscribe implements Broker. It returns once Redis confirmed every channel, or with
// ctx's error (then the channels are unsubscribed again).
func (b *RedisBroker) Subscribe(ctx context.Context, channels ...string) error {
	// Checked first: with ctx done, the wait below could still pick a confirmation
	// that came at once.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redis subscribe: %w", err)
	}
	for bucket, chs := range b.group(channels) {
		if err := b.subscribe(ctx, bucket, chs); err != nil {
			return err
		}
	}
	return nil
}

// group sorts channels by bucket, as wire names.
func (b *RedisBroker) group(channels []string) map[int][]string {
	g := make(map[int][]string, 1)
	for _, ch := range channels {
		k := b.bucket(ch)
		g[k] = append(g[k], b.wire(ch))
	}
	return g
}

func (b *RedisBroker) subscribe(ctx context.Context, bucket int, full []string) error {
	c, err := b.conn(ctx, bucket)
	if err != nil {
		return err
	}
	waiters := make([]chan struct{}, len(full))
	b.mu.Lock()
	for i, ch := range full {
		s := c.subs[ch]
		if s == nil {
			s = &redisSub{}
			c.subs[ch] = s
		}
		waiters[i] = make(chan struct{})
		s.waiters = append(s.waiters, waiters[i])
	}
	b.mu.Unlock()

	if b.cluster != nil {
		err = c.pubsub.SSubscribe(ctx, full...)
	} else {
		err = c.pubsub.Subscribe(ctx, full...)
	}
	for i := 0; err == nil && i < len(waiters); i++ {
		select {
		case <-waiters[i]:
		case <-ctx.Done():
			err = ctx.Err()
		case <-b.closing:
			err = ErrBrokerClosed
		}
	}
	if err != nil {
		b.forget(c, full)
		// go-redis keeps a channel whose SUBSCRIBE failed, to resubscribe it after a reconnect.
		if uerr := b.unsubscribe(context.WithoutCancel(ctx), c, full); uerr != nil {
			b.log.Warn("realtime: redis unsubscribe after failed subscribe", slog.Any("error", uerr))
		}
		return fmt.Errorf("redis subscribe %s: %w", strings.Join(full, ","), err)
	}
	return nil
}

func (b *RedisBroker) unsubscribe(ctx context.Context, c *redisConn, full []string) error {
	if b.cluster != nil {
		return c.pubsub.SUnsubscribe(ctx, full...)
	}
	return c.pubsub.Unsubscribe(ctx, full...)
}

// Unsubscribe implements Broker. It does not wait for Redis to confirm.
func (b *RedisBroker) Unsubscribe(ctx context.Context, channels ...string) error {
	for bucket, full := range b.group(channels) {
		c, err := b.conn(ctx, bucket)
		if err != nil {
			return err
		}
		b.forget(c, full)
		if err := b.unsubscribe(ctx, c, full); err != nil {
			return fmt.Errorf("redis unsubscribe %s: %w", strings.Join(full, ","), err)
		}
	}
	return nil
}

// Publish implements Broker. While the channel's shard is marked down it returns nil
// at once (see RedisBroker); otherwise it waits for the publications queued before it
// (each pipeline at most publishTimeout) and its own, or until ctx is done.
func (b *RedisBroker) Publish(ctx context.Context, channel string, data []byte) error {
	res := make(chan error, 1)
	b.PublishAsync(channel, data, func(err error) { res <- err })
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return ctx.Err() // it is still published
	}
}

// PublishAsync is Publish without the wait: it queues the publication behind every
// publication made before it to the same bucket (Publish or PublishAsync, any
// goroutine; one bucket on a single Redis, a user's channel is always in the same one)
// and returns; done, if not nil, is called with Publish's result once Redis answered,
// on the bucket's publish goroutine, or at once on the caller's when the publication
// is skipped (shard down), refused (ErrBrokerClosed) or dropped because
// maxQueuedPublishes wait already (Redis is too slow to keep up); it must not block.
// PublishAsync itself never waits for Redis.
func (b *RedisBroker) PublishAsync(channel string, data []byte, done func(error)) {
	bucket, wire := b.bucket(channel), b.wire(channel)
	if b.skip(bucket, wire, data) {
		if done != nil {
			done(nil)
		}
		return
	}
	err := ErrBrokerClosed
	if q := b.publishQueue(bucket); q != nil {
		err = q.add(queuedPub{wire: wire, data: data, done: done})
	}
	if err == errPublishQueueFull {
		b.noteDropped()
	}
	if err != nil && done != nil {
		done(err)
	}
}

// noteDropped counts a publication dropped on a full queue and logs the drops at most
// every dropLogInterval.
func (b *RedisBroker) noteDropped() {
	b.pmu.Lock()
	defer b.pmu.Unlock()
	b.dropped++
	if now := time.Now(); now.Sub(b.droppedLogged) >= dropLogInterval {
		b.log.Warn("realtime: redis is too slow for the publishes; dropped publications (sockets on other replicas read them from the event log)",
			slog.Int("dropped", b.dropped), slog.Int("queue", maxQueuedPublishes))
		b.droppedLogged, b.dropped = now, 0
	}
}

// errPublishQueueFull is a publication dropped because its bucket's queue was full.
var errPublishQueueFull = fmt.Errorf("redis publish: more than %d publications wait for Redis: dropped (sockets on other replicas read it from the event log)", maxQueuedPublishes)

// publishQueue returns bucket's queue, started on first use; nil after Close.
func (b *RedisBroker) publishQueue(bucket int) *publishQueue {
	b.pmu.Lock()
	defer b.pmu.Unlock()
	if b.pclosed {
		return nil
	}
	q := b.pqueues[bucket]
	if q == nil {
		q = &publishQueue{b: b, bucket: bucket, wake: make(chan struct{}, 1), done: make(chan struct{})}
		b.pqueues[bucket] = q
		go q.run()
	}
	return q
}

// closePublishQueues sends what the queues hold and stops them.
func (b *RedisBroker) closePublishQueues() {
	b.pmu.Lock()
	b.pclosed = true
	qs := slices.Collect(maps.Values(b.pqueues))
	b.pmu.Unlock()
	for _, q := range qs {
		q.mu.Lock()
		q.closed = true
		close(q.wake)
		q.mu.Unlock()
	}
	for _, q := range qs {
		<-q.done
	}
}

// publishQueue is one bucket's publications waiting for Redis, in the order they were
// made. One goroutine (run) sends what is queued as one pipeline at a time, so
// concurrent publishes share round trips and none overtakes another; a Redis node
// that hangs holds up the buckets it serves only.
type publishQueue struct {
	b      *RedisBroker
	bucket int
	mu     sync.Mutex
	queue  []queuedPub
	closed bool
	wake   chan struct{} // cap 1: the queue has publications
	done   chan struct{} // closed when run returned
}

// queuedPub is a publication waiting for its pipeline.
type queuedPub struct {
	wire string
	data []byte
	done func(error)
}

// add queues p; ErrBrokerClosed once the queue is closed, errPublishQueueFull when
// maxQueuedPublishes wait already (Redis is slow: the caller does not wait for it).
func (q *publishQueue) add(p queuedPub) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrBrokerClosed
	}
	if len(q.queue) >= maxQueuedPublishes {
		return errPublishQueueFull
	}
	q.queue = append(q.queue, p)
	select {
	case q.wake <- struct{}{}:
	default: // run is due to look at the queue
	}
	return nil
}

// run sends the queued publications, in order, until the queue is closed and empty:
// whatever queued up while one pipeline was out goes in the next one (one round trip,
// bounded by publishTimeout, for up to maxPipeline publications).
func (q *publishQueue) run() {
	defer close(q.done)
	var batch []queuedPub
	for range q.wake {
		for {
			q.mu.Lock()
			n := min(len(q.queue), maxPipeline)
			batch = append(batch[:0], q.queue[:n]...)
			clear(q.queue[:n])
			q.queue = q.queue[n:]
			if len(q.queue) == 0 {
				q.queue = nil
			}
			q.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			q.b.publishBatch(q.bucket, batch)
		}
	}
}

// publishBatch sends batch, publications of bucket, as one pipeline and answers them.
// If the bucket was marked down while they were queued, they are skipped, as in Publish.
func (b *RedisBroker) publishBatch(bucket int, batch []queuedPub) {
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	pipe := b.client.Pipeline()
	cmds := make([]*redis.IntCmd, len(batch))
	for i, p := range batch {
		if b.skip(bucket, p.wire, p.data) {
			continue
		}
		if b.cluster != nil {
			cmds[i] = pipe.SPublish(ctx, p.wire, p.data)
		} else {
			cmds[i] = pipe.Publish(ctx, p.wire, p.data)
		}
	}
	start := time.Now()
	if pipe.Len() > 0 {
		_, _ = pipe.Exec(ctx) // each command has its error
	}
	var ok *atomic.Int64 // the batch's node (a bucket is one slot): looked up once
	for i, p := range batch {
		var err error
		if cmds[i] != nil {
			if ok == nil {
				ok = b.okAt(p.wire)
			}
			err = b.settle(ok, bucket, p.wire, p.data, start, cmds[i].Err())
		}
		if p.done != nil {
			p.done(err)
		}
	}
}

// settle notes the outcome of a publish sent at start to the node whose lastOK is ok:
// a failure marks the shard down if that node answered no other publish meanwhile (it
// is not just slow); a success marks the node as answering.
func (b *RedisBroker) settle(ok *atomic.Int64, bucket int, wire string, data []byte, start time.Time, err error) error {
	if err != nil {
		if errors.Is(err, redis.ErrClosed) {
			return ErrBrokerClosed
		}
		if ok.Load() < start.UnixNano() {
			b.markDown(bucket, wire, data, err)
		}
		return fmt.Errorf("redis publish %s: %w", wire, err)
	}
	if now := time.Now().UnixNano(); ok.Load() < now {
		ok.Store(now)
	}
	return nil
}

// okAt returns the lastOK of the node wire is published on.
func (b *RedisBroker) okAt(wire string) *atomic.Int64 {
	addr := ""
	if b.cluster != nil {
		ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
		if c, err := b.cluster.MasterForKey(ctx, wire); err == nil { // from go-redis's slot map
			addr = c.Options().Addr
		}
		cancel()
	}
	if v, ok := b.lastOK.Load(addr); ok {
		return v.(*atomic.Int64)
	}
	v, _ := b.lastOK.LoadOrStore(addr, new(atomic.Int64))
	return v.(*atomic.Int64)
}

// Down reports whether a publish failed and Redis (on a cluster: one of the shards)
// has not answered since: other users of the same Redis can skip it meanwhile.
func (b *RedisBroker) Down() bool {
	b.hmu.Lock()
	defer b.hmu.Unlock()
	return len(b.down) > 0
}

// skip reports whether bucket is down, and then counts the publication (and keeps it,
// if sequenced, as its channel's nudge).
func (b *RedisBroker) skip(bucket int, wire string, data []byte) bool {
	b.hmu.Lock()
	defer b.hmu.Unlock()
	d := b.down[bucket]
	if d == nil {
		return false
	}
	b.skipped++
	b.keepNudge(d, wire, data)
	return true
}

// keepNudge keeps data as wire's nudge if it is sequenced (hmu held).
func (b *RedisBroker) keepNudge(d *downShard, wire string, data []byte) {
	p, err := decodePublication(data)
	if err != nil || p.Seq <= 0 {
		return
	}
	if old, ok := d.nudges[wire]; ok {
		if op, _ := decodePublication(old); op.Seq >= p.Seq {
			return // an older one skipped late (it was queued): keep the newest
		}
	} else {
		if b.nudgeLen >= maxNudges {
			return // those channels' subscribers find the gap at their next event
		}
		b.nudgeLen++
	}
	d.nudges[wire] = data
}

// markDown marks bucket down after a failed publish of data and starts its probe.
func (b *RedisBroker) markDown(bucket int, wire string, data []byte, cause error) {
	b.hmu.Lock()
	defer b.hmu.Unlock()
	d := b.down[bucket]
	if d == nil {
		select {
		case <-b.closing:
			return
		default:
		}
		d = &downShard{nudges: make(map[string][]byte)}
		if len(b.down) == 0 {
			b.downAt, b.skipped = time.Now(), 0
			b.log.Warn("realtime: redis publish failed; publishing is skipped until Redis answers, sockets catch up from the event log",
				slog.Any("error", cause))
		}
		b.down[bucket] = d
		b.wg.Go(func() { b.probe(bucket) })
	}
	b.keepNudge(d, wire, data)
}

// probe asks Redis about bucket every probeInterval until it answers, then brings the
// bucket back and republishes its nudges.
func (b *RedisBroker) probe(bucket int) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	key := b.anchor(bucket) // any key of the bucket's slot: EXISTS is routed to its master
	for {
		select {
		case <-b.closing:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
		err := b.client.Exists(ctx, key).Err()
		cancel()
		if err != nil {
			if b.cluster != nil {
				b.cluster.ReloadState(context.Background()) // a replica may have taken over
			}
			continue
		}
		b.hmu.Lock()
		d := b.down[bucket]
		delete(b.down, bucket)
		b.nudgeLen -= len(d.nudges)
		if len(b.down) == 0 {
			b.log.Info("realtime: redis answers again; publishing resumed",
				slog.Duration("down", time.Since(b.downAt).Round(time.Millisecond)), slog.Int("skipped", b.skipped))
		}
		b.hmu.Unlock()
		for wire, data := range d.nudges {
			ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
			if b.cluster != nil {
				err = b.cluster.SPublish(ctx, wire, data).Err()
			} else {
				err = b.client.Publish(ctx, wire, data).Err()
			}
			cancel()
			if err != nil {
				break // down again: the next failed publish marks it
			}
		}
		return
	}
}

func (b *RedisBroker) forget(c *redisConn, full []string) {
	b.mu.Lock()
	for _, ch := range full {
		delete(c.subs, ch)
	}
	b.mu.Unlock()
}

// run reads c's PubSub channel until go-redis closes it (after Close).
func (b *RedisBroker) run(c *redisConn) {
	for m := range c.msgs {
		switch m := m.(type) {
		case *redis.Message:
			b.handleMessage(m)
		case *redis.Subscription:
			b.handleSubscription(c, m)
		}
	}
}

func (b *RedisBroker) handleMessage(m *redis.Message) {
	ch, ok := b.hubChannel(m.Channel)
	if !ok {
		return
	}
	b.mu.Lock()
	h := b.handler
	b.mu.Unlock()
	if h != nil {
		h.HandlePublication(ch, []byte(m.Payload))
	}
}

func (b *RedisBroker) handleSubscription(c *redisConn, m *redis.Subscription) {
	if m.Kind != "subscribe" && m.Kind != "ssubscribe" {
		return
	}
	b.mu.Lock()
	s := c.subs[m.Channel]
	if s == nil { // unsubscribed meanwhile
		b.mu.Unlock()
		return
	}
	if !s.confirmed || len(s.waiters) > 0 {
		// The answer to our own SUBSCRIBE (possibly resent by go-redis after a reconnect).
		s.confirmed = true
		s.gen = c.gen
		for _, w := range s.waiters {
			close(w)
		}
		s.waiters = nil
		b.mu.Unlock()
		return
	}
	// A confirmation nobody asked for: go-redis reconnected and resubscribed.
	if s.gen != c.gen {
		s.gen = c.gen
		b.mu.Unlock()
		return
	}
	c.gen++
	s.gen = c.gen
	if b.cluster == nil {
		h := b.handler
		b.mu.Unlock()
		b.resubscribed(h)
		return
	}
	// Several buckets reconnect together when a master fails: one catch-up for all of
	// them, after the last (a catch-up reads what was committed before it started).
	if b.resubDue {
		b.mu.Unlock()
		return
	}
	b.resubDue = true
	b.mu.Unlock()
	time.AfterFunc(resubscribeDelay, func() {
		b.mu.Lock()
		b.resubDue = false
		h := b.handler
		b.mu.Unlock()
		b.resubscribed(h)
	})
}

func (b *RedisBroker) resubscribed(h BrokerEventHandler) {
	if h != nil {
		b.log.Warn("realtime: redis pubsub reconnected; clients catch up from history")
		h.HandleResubscribed()
	}
}
