package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"
	"github.com/gofiber/contrib/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/redis/go-redis/v9"
)

// memHistory is the test's event log: a slice of publications per user, appended under a
// mutex and then published, like the store does after its transaction commits.
type memHistory struct {
	mu         sync.Mutex
	events     map[string][]Publication
	last       map[string]int64
	failSince  atomic.Int32 // the next failSince calls of Since fail
	sinceDelay atomic.Int64 // Since returns what it read after this many nanoseconds (a slow query)
}

func newMemHistory() *memHistory {
	return &memHistory{events: make(map[string][]Publication), last: make(map[string]int64)}
}

func (m *memHistory) Since(ctx context.Context, user string, since int64, limit int) ([]Publication, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if m.failSince.Add(-1) >= 0 {
		return nil, errors.New("history unavailable")
	}
	m.mu.Lock()
	var out []Publication
	for _, p := range m.events[user] {
		if p.Seq > since {
			out = append(out, p)
			if len(out) == limit {
				break
			}
		}
	}
	m.mu.Unlock()
	if d := m.sinceDelay.Load(); d > 0 {
		time.Sleep(time.Duration(d))
	}
	return out, nil
}

func (m *memHistory) LastSeq(ctx context.Context, user string) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last[user], nil
}

// add appends the user's next event, padded with pad bytes.
func (m *memHistory) add(user string, pad int) Publication {
	m.mu.Lock()
	defer m.mu.Unlock()
	seq := m.last[user] + 1
	m.last[user] = seq
	data := fmt.Appendf(nil, `{"type":"todo.created","seq":%d,"user":%q,"pad":"%s"}`, seq, user, strings.Repeat("x", pad))
	p := Publication{Seq: seq, Data: data}
	m.events[user] = append(m.events[user], p)
	return p
}

// LastSeqs implements LastSeqsReader.
func (m *memHistory) LastSeqs(ctx context.Context, users []string) (map[string]int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]int64, len(users))
	for _, u := range users {
		out[u] = m.last[u]
	}
	return out, nil
}

// lastSeq returns the user's latest seq.
func (m *memHistory) lastSeq(user string) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last[user]
}

// prune drops the user's events up to seq.
func (m *memHistory) prune(user string, upTo int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.events[user] = slices.DeleteFunc(m.events[user], func(p Publication) bool { return p.Seq <= upTo })
}

// emit appends the user's next event and publishes it through hub.
func emit(t testing.TB, hub *Hub, hist *memHistory, user string, pad int) int64 {
	p := hist.add(user, pad)
	if err := hub.Publish(context.Background(), user, p); err != nil {
		t.Errorf("publish seq %d: %v", p.Seq, err)
	}
	return p.Seq
}

// testFrames is the FrameHandler of the test server.
type testFrames struct{}

func (testFrames) HandleFrame(c *Client, typ string, raw []byte) {
	switch typ {
	case "echo":
		c.Send(raw)
	case "auth":
		c.SetExpires(time.Now().Add(time.Hour))
		c.Send([]byte(`{"type":"auth.ok"}`))
	case "panic":
		panic("boom")
	default:
		c.Send(ErrorFrame(ErrorBadRequest, "unknown frame"))
	}
}

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.DiscardHandler)
}

// replica is one hub behind its own Fiber app on 127.0.0.1:0.
type replica struct {
	hub *Hub
	url string // ws://host:port/ws/
}

func startReplica(t testing.TB, b Broker, hist History, cfg Config) *replica {
	t.Helper()
	hub := NewHub(b, hist, cfg, testLogger())
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Get("/ws/:user", websocket.New(func(c *websocket.Conn) {
		var exp time.Time
		if s := c.Query("exp_ms"); s != "" {
			ms, _ := strconv.ParseInt(s, 10, 64)
			exp = time.UnixMilli(ms)
		}
		var fh FrameHandler = testFrames{}
		if c.Query("nofh") != "" {
			fh = nil
		}
		sess := Session{User: c.Params("user"), Expires: exp}
		if v := c.Query("since"); v != "" {
			since, _ := strconv.ParseInt(v, 10, 64)
			sess.Since = &since
		}
		hub.Serve(context.Background(), c, sess, fh)
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = app.Listener(ln)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := hub.Shutdown(ctx); err != nil {
			t.Errorf("hub shutdown: %v", err)
		}
		if err := app.ShutdownWithTimeout(5 * time.Second); err != nil {
			t.Errorf("fiber shutdown: %v", err)
		}
		<-served
	})
	return &replica{hub: hub, url: "ws://" + ln.Addr().String() + "/ws/"}
}

// env is a "cluster" of two replicas sharing one broker system and one event log. With
// the memory broker, a and b are the same replica.
type env struct {
	a, b *replica
	hist *memHistory
	// killPubSub kills the Redis PubSub connections of both replicas (Redis only).
	killPubSub func(t testing.TB) int
}

type backend struct {
	name  string
	setup func(t testing.TB, cfg Config) *env
}

var backends = []backend{
	{"memory", setupMemory},
	{"redis", setupRedis},
}

func setupMemory(t testing.TB, cfg Config) *env {
	hist := newMemHistory()
	r := startReplica(t, NewMemoryBroker(), hist, cfg)
	return &env{a: r, b: r, hist: hist}
}

const redisAddr = "127.0.0.1:6379"

// newRedisClient returns a client named name, skipping the test if Redis is not there
// (failing in CI).
func newRedisClient(t testing.TB, name string) *redis.Client {
	t.Helper()
	client := redis.NewClient(&redis.Options{Addr: redisAddr, ClientName: name})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		if os.Getenv("CI") != "" {
			t.Fatalf("redis at %s: %v", redisAddr, err)
		}
		t.Skipf("redis at %s not available: %v", redisAddr, err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return client
}

func uniquePrefix() string {
	return fmt.Sprintf("evotest:%d%x:", time.Now().UnixNano(), rand.Uint32())
}

func newRedisBroker(t testing.TB, client redis.UniversalClient, prefix string) *RedisBroker {
	t.Helper()
	b, err := NewRedisBroker(client, prefix, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func setupRedis(t testing.TB, cfg Config) *env {
	name := strings.ReplaceAll(strings.TrimSuffix(uniquePrefix(), ":"), ":", "-")
	ca := newRedisClient(t, name)
	cb := newRedisClient(t, name)
	prefix := uniquePrefix()
	hist := newMemHistory()
	// Brokers are closed after the replicas (cleanups run last registered first).
	ba := newRedisBroker(t, ca, prefix)
	bb := newRedisBroker(t, cb, prefix)
	return &env{
		a:          startReplica(t, ba, hist, cfg),
		b:          startReplica(t, bb, hist, cfg),
		hist:       hist,
		killPubSub: func(t testing.TB) int { return killPubSub(t, ca, name) },
	}
}

// killPubSub kills the PubSub connections named name, as a Redis restart would, and
// returns how many it killed.
func killPubSub(t testing.TB, admin *redis.Client, name string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	list, err := admin.Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").Text()
	if err != nil {
		t.Fatalf("client list: %v", err)
	}
	killed := 0
	for _, line := range strings.Split(list, "\n") {
		var id string
		named := false
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "id="); ok {
				id = v
			}
			if f == "name="+name {
				named = true
			}
		}
		if named && id != "" {
			if err := admin.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil {
				t.Errorf("client kill %s: %v", id, err)
			}
			killed++
		}
	}
	return killed
}

// frame is any frame the tests read.
type frame struct {
	Type     string `json:"type"`
	Seq      int64  `json:"seq"`
	Since    int64  `json:"since"`
	Replayed int    `json:"replayed"`
	UserID   string `json:"user_id"`
	User     string `json:"user"`
	Code     string `json:"code"`
	Message  string `json:"message"`
}

func (f frame) sequenced() bool { return strings.HasPrefix(f.Type, "todo.") }

// wsClient is a test WebSocket client.
type wsClient struct {
	t    testing.TB
	conn *fws.Conn
}

func dial(t testing.TB, url string) *wsClient {
	t.Helper()
	return dialWith(t, &fws.Dialer{HandshakeTimeout: 5 * time.Second}, url)
}

func dialWith(t testing.TB, d *fws.Dialer, url string) *wsClient {
	t.Helper()
	conn, resp, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &wsClient{t: t, conn: conn}
}

func (c *wsClient) send(s string) {
	c.t.Helper()
	if err := c.conn.WriteMessage(fws.TextMessage, []byte(s)); err != nil {
		c.t.Fatalf("send %s: %v", s, err)
	}
}

// read returns the next frame, or an error (a *fws.CloseError when the server closed).
func (c *wsClient) read(timeout time.Duration) (frame, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	_, data, err := c.conn.ReadMessage()
	if err != nil {
		return frame{}, err
	}
	var f frame
	if err := json.Unmarshal(data, &f); err != nil {
		return frame{}, fmt.Errorf("bad frame %q: %w", data, err)
	}
	return f, nil
}

func (c *wsClient) next() frame {
	c.t.Helper()
	f, err := c.read(5 * time.Second)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return f
}

func (c *wsClient) expect(typ string) frame {
	c.t.Helper()
	f := c.next()
	if f.Type != typ {
		c.t.Fatalf("got frame %+v, want type %s", f, typ)
	}
	return f
}

// expectClose reads until the server closes the socket and checks the close code.
func (c *wsClient) expectClose(code int, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		_ = c.conn.SetReadDeadline(deadline)
		_, data, err := c.conn.ReadMessage()
		if err == nil {
			_ = data
			continue
		}
		var ce *fws.CloseError
		if !errors.As(err, &ce) {
			c.t.Fatalf("got %v, want close %d", err, code)
		}
		if ce.Code != code {
			c.t.Fatalf("got close %d %q, want %d", ce.Code, ce.Text, code)
		}
		return
	}
}

// greet reads hello and resumes from since, returning hello and resumed.
func (c *wsClient) greet(since int64) (hello, resumed frame) {
	c.t.Helper()
	hello = c.expect("hello")
	c.send(fmt.Sprintf(`{"type":"resume","since":%d}`, since))
	for {
		f := c.next()
		if f.Type == "resumed" {
			return hello, f
		}
		if !f.sequenced() {
			c.t.Fatalf("got %+v while resuming", f)
		}
	}
}

// seqsUntil reads until the sequenced frame last and returns the seqs of all sequenced
// frames read, and the other frames.
func (c *wsClient) seqsUntil(last int64, timeout time.Duration) (seqs []int64, others []frame) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		f, err := c.read(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("read after seq %v: %v", tail(seqs), err)
		}
		if !f.sequenced() {
			others = append(others, f)
			continue
		}
		seqs = append(seqs, f.Seq)
		if f.Seq >= last {
			return seqs, others
		}
	}
}

func tail(s []int64) []int64 {
	if len(s) > 5 {
		return s[len(s)-5:]
	}
	return s
}

// span returns from..to.
func span(from, to int64) []int64 {
	var s []int64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

func checkSeqs(t testing.TB, got, want []int64) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("got %d seqs %v, want %d seqs %v", len(got), abbreviate(got), len(want), abbreviate(want))
	}
}

func abbreviate(s []int64) string {
	if len(s) <= 20 {
		return fmt.Sprint(s)
	}
	return fmt.Sprintf("%v ... %v", s[:10], s[len(s)-10:])
}

// TestHub runs the hub suite over both brokers. With Redis, publications are made on
// replica a and sockets are mostly on replica b.
func TestHub(t *testing.T) {
	for _, bk := range backends {
		t.Run(bk.name, func(t *testing.T) {
			t.Run("HelloThenLiveInOrder", func(t *testing.T) { testHelloThenLive(t, bk) })
			t.Run("ResumeSeamUnderConcurrentPublish", func(t *testing.T) { testResumeSeam(t, bk) })
			t.Run("ResyncWhenPruned", func(t *testing.T) { testResync(t, bk) })
			t.Run("LiveAtOnce", func(t *testing.T) { testLiveAtOnce(t, bk) })
			t.Run("ConnectResume", func(t *testing.T) { testConnectResume(t, bk) })
			t.Run("LostPublication", func(t *testing.T) { testLostPublication(t, bk) })
			t.Run("FirstFrameOpensSeam", func(t *testing.T) { testFirstFrame(t, bk) })
			t.Run("LateAndRepeatedResume", func(t *testing.T) { testLateResume(t, bk) })
			t.Run("GapCatchUp", func(t *testing.T) { testGap(t, bk) })
			t.Run("OutOfOrderPublications", func(t *testing.T) { testOutOfOrder(t, bk) })
			t.Run("EphemeralOncePerSocket", func(t *testing.T) { testEphemeral(t, bk) })
			t.Run("PublishedDuringSlowReplay", func(t *testing.T) { testDirty(t, bk) })
			t.Run("HistoryErrorRetried", func(t *testing.T) { testHistoryError(t, bk) })
			t.Run("OtherUsersIsolated", func(t *testing.T) { testIsolation(t, bk) })
			t.Run("SlowConsumerClosed", func(t *testing.T) { testSlowConsumer(t, bk) })
			t.Run("TokenExpiry", func(t *testing.T) { testExpiry(t, bk) })
			t.Run("Shutdown", func(t *testing.T) { testShutdown(t, bk) })
			t.Run("ConnectionCaps", func(t *testing.T) { testCaps(t, bk) })
			t.Run("PingPong", func(t *testing.T) { testPingPong(t, bk) })
			t.Run("DeadPeerDropped", func(t *testing.T) { testDeadPeer(t, bk) })
			t.Run("BadFrames", func(t *testing.T) { testBadFrames(t, bk) })
			t.Run("RateLimited", func(t *testing.T) { testRateLimit(t, bk) })
			t.Run("HandlerPanic", func(t *testing.T) { testPanic(t, bk) })
			t.Run("MessageTooBig", func(t *testing.T) { testTooBig(t, bk) })
			if bk.name == "redis" {
				t.Run("PubSubKilledWhilePublishing", func(t *testing.T) { testPubSubKilled(t, bk) })
			}
		})
	}
}

func testHelloThenLive(t *testing.T, bk backend) {
	e := bk.setup(t, Config{})
	e.hist.add("u1", 0)
	e.hist.add("u1", 0)
	c := dial(t, e.b.url+"u1")
	hello, resumed := c.greet(2)
	if hello.UserID != "u1" || hello.Seq != 2 {
		t.Fatalf("hello = %+v, want user u1 seq 2", hello)
	}
	if resumed.Since != 2 || resumed.Seq != 2 || resumed.Replayed != 0 {
		t.Fatalf("resumed = %+v, want since 2 seq 2 replayed 0", resumed)
	}
	for range 50 {
		emit(t, e.a.hub, e.hist, "u1", 0)
	}
	if err := e.a.hub.Publish(context.Background(), "u1", Publication{Data: []byte(`{"type":"chat.token","delta":"hi"}`)}); err != nil {
		t.Fatal(err)
	}
	emit(t, e.a.hub, e.hist, "u1", 0)
	seqs, others := c.seqsUntil(53, 10*time.Second)
	checkSeqs(t, seqs, span(3, 53))
	if len(others) != 1 || others[0].Type != "chat.token" {
		t.Fatalf("other frames = %+v, want one chat.token", others)
	}
	if got := e.b.hub.Conns(); got != 1 {
		t.Fatalf("Conns() = %d, want 1", got)
	}
}

// testResumeSeam: a resume frame sent after hello while events are published gets every
// event after since exactly once; the ones the socket sent live before the resume
// arrived come first, the missing ones then (exact order needs ?since, testConnectResume).
func testResumeSeam(t *testing.T, bk backend) {
	e := bk.setup(t, Config{ReplayBatch: 7})
	for range 20 {
		e.hist.add("u1", 0)
	}
	for round := range 3 {
		const total = 320
		start := e.hist.lastSeq("u1")
		c := dial(t, e.b.url+"u1")
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // publish while the socket greets and resumes
			defer wg.Done()
			for i := range total - 20 {
				emit(t, e.a.hub, e.hist, "u1", 0)
				if i%16 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
		hello := c.expect("hello")
		since := start - 15
		c.send(fmt.Sprintf(`{"type":"resume","since":%d}`, since))
		last := start + total - 20
		var seqs []int64
		var resumed *frame
		seen := map[int64]bool{}
		for resumed == nil || len(seen) < int(last-since) {
			f := c.next()
			switch {
			case f.sequenced():
				if seen[f.Seq] {
					t.Fatalf("round %d: seq %d twice", round, f.Seq)
				}
				seen[f.Seq] = true
				seqs = append(seqs, f.Seq)
			case f.Type == "resumed" && resumed == nil:
				resumed = &f
			default:
				t.Fatalf("round %d: unexpected %+v", round, f)
			}
		}
		wg.Wait()
		slices.Sort(seqs)
		checkSeqs(t, seqs, span(since+1, last))
		if r := resumed; r.Since != since || r.Seq < hello.Seq {
			t.Fatalf("round %d: resumed = %+v after hello seq %d, since %d", round, r, hello.Seq, since)
		}
		if f, err := c.read(200 * time.Millisecond); err == nil {
			t.Fatalf("round %d: unexpected frame %+v", round, f)
		}
	}
}

func testResync(t *testing.T, bk backend) {
	e := bk.setup(t, Config{ReplayBatch: 4})
	for range 30 {
		e.hist.add("u1", 0)
	}
	e.hist.prune("u1", 20)

	t.Run("Pruned", func(t *testing.T) {
		c := dial(t, e.b.url+"u1")
		c.expect("hello")
		c.send(`{"type":"resume","since":5}`)
		if f := c.expect("resync"); f.Seq != 30 {
			t.Fatalf("resync = %+v, want seq 30", f)
		}
		emit(t, e.a.hub, e.hist, "u1", 0)
		seqs, others := c.seqsUntil(e.hist.lastSeq("u1"), 5*time.Second)
		checkSeqs(t, seqs, span(31, e.hist.lastSeq("u1")))
		if len(others) != 0 {
			t.Fatalf("other frames %+v", others)
		}
	})
	t.Run("NotPruned", func(t *testing.T) {
		c := dial(t, e.b.url+"u1")
		last := e.hist.lastSeq("u1")
		_, r := c.greet(25)
		if r.Seq != last || r.Replayed != int(last-25) {
			t.Fatalf("resumed = %+v, want seq %d", r, last)
		}
	})
	t.Run("AheadOfLog", func(t *testing.T) {
		c := dial(t, e.b.url+"u1")
		hello := c.expect("hello")
		c.send(fmt.Sprintf(`{"type":"resume","since":%d}`, hello.Seq+100))
		if f := c.expect("resync"); f.Seq != hello.Seq {
			t.Fatalf("resync = %+v, want seq %d", f, hello.Seq)
		}
		seq := emit(t, e.a.hub, e.hist, "u1", 0)
		if f := c.next(); f.Seq != seq {
			t.Fatalf("got %+v, want seq %d", f, seq)
		}
	})
}

// testLiveAtOnce: a socket that connects without since gets live events at once, from
// hello's seq, with no wait for a resume.
func testLiveAtOnce(t *testing.T, bk backend) {
	e := bk.setup(t, Config{})
	e.hist.add("u1", 0)
	c := dial(t, e.b.url+"u1")
	if h := c.expect("hello"); h.Seq != 1 {
		t.Fatalf("hello = %+v", h)
	}
	start := time.Now()
	emit(t, e.a.hub, e.hist, "u1", 0)
	f, err := c.read(5 * time.Second)
	if err != nil || f.Seq != 2 {
		t.Fatalf("got %+v, %v; want seq 2", f, err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("the live event took %v (a wait for resume?)", took)
	}
}

func testFirstFrame(t *testing.T, bk backend) {
	e := bk.setup(t, Config{})
	c := dial(t, e.b.url+"u1")
	c.expect("hello")
	emit(t, e.a.hub, e.hist, "u1", 0)
	c.send(`{"type":"echo","n":1}`)
	seqs, others := c.seqsUntil(1, 5*time.Second)
	checkSeqs(t, seqs, []int64{1})
	if len(others) > 1 || (len(others) == 1 && others[0].Type != "echo") {
		t.Fatalf("others %+v", others)
	}
}

// testLateResume: a resume typed by hand long after connect replays what the socket has
// not sent; resync is only for pruned events or a since beyond the log.
func testLateResume(t *testing.T, bk backend) {
	e := bk.setup(t, Config{})
	for range 5 {
		e.hist.add("u1", 0)
	}
	c := dial(t, e.b.url+"u1")
	c.expect("hello")
	time.Sleep(300 * time.Millisecond) // a person typing
	c.send(`{"type":"resume","since":2}`)
	seqs, others := c.seqsUntil(5, 5*time.Second)
	checkSeqs(t, seqs, span(3, 5))
	if f := c.expect("resumed"); len(others) != 0 || f.Since != 2 || f.Seq != 5 || f.Replayed != 3 {
		t.Fatalf("resumed = %+v, others %+v", f, others)
	}

	emit(t, e.a.hub, e.hist, "u1", 0)
	emit(t, e.a.hub, e.hist, "u1", 0)
	seqs, _ = c.seqsUntil(7, 5*time.Second)
	checkSeqs(t, seqs, []int64{6, 7})
	c.send(`{"type":"resume","since":6}`) // nothing missed
	if f := c.expect("resumed"); f.Since != 6 || f.Seq != 7 || f.Replayed != 0 {
		t.Fatalf("resumed = %+v", f)
	}
	c.send(`{"type":"resume","since":0}`) // 1..2 were never sent on this socket; 3..7 were
	seqs, _ = c.seqsUntil(2, 5*time.Second)
	checkSeqs(t, seqs, []int64{1, 2})
	if f := c.expect("resumed"); f.Since != 0 || f.Seq != 7 || f.Replayed != 2 {
		t.Fatalf("resumed = %+v", f)
	}
	c.send(`{"type":"resume","since":100}`) // beyond the log: it was reset
	if f := c.expect("resync"); f.Seq != 7 {
		t.Fatalf("resync = %+v, want seq 7", f)
	}
	seq := emit(t, e.a.hub, e.hist, "u1", 0)
	seqs, _ = c.seqsUntil(seq, 5*time.Second)
	checkSeqs(t, seqs, []int64{seq})

	c.send(`{"type":"resume","since":"x"}`)
	c.expectClose(CloseBadRequest, 5*time.Second)
}

// testConnectResume: /ws?since=S replays S+1.. and goes live, exactly, while events are
// published; a since beyond the log is answered with resync.
func testConnectResume(t *testing.T, bk backend) {
	e := bk.setup(t, Config{ReplayBatch: 7})
	for range 20 {
		e.hist.add("u1", 0)
	}
	const total = 300
	start := e.hist.lastSeq("u1")
	since := start - 15
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range total {
			emit(t, e.a.hub, e.hist, "u1", 0)
			if i%16 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	c := dial(t, fmt.Sprintf("%su1?since=%d", e.b.url, since))
	hello := c.expect("hello")
	last := start + total
	seqs, others := c.seqsUntil(last, 20*time.Second)
	wg.Wait()
	checkSeqs(t, seqs, span(since+1, last))
	if len(others) != 1 || others[0].Type != "resumed" {
		t.Fatalf("other frames %+v, want one resumed", others)
	}
	if r := others[0]; r.Since != since || r.Seq < hello.Seq || r.Replayed != int(r.Seq-since) {
		t.Fatalf("resumed = %+v after hello seq %d, since %d", r, hello.Seq, since)
	}
	if f, err := c.read(200 * time.Millisecond); err == nil {
		t.Fatalf("unexpected frame %+v", f)
	}

	ahead := dial(t, fmt.Sprintf("%su1?since=%d", e.b.url, last+10))
	ahead.expect("hello")
	if f := ahead.expect("resync"); f.Seq != last {
		t.Fatalf("resync = %+v, want seq %d", f, last)
	}
}

// testLostPublication: an event committed but never published (its writer died right
// after the commit) reaches the sockets within two log checks, with no later event.
func testLostPublication(t *testing.T, bk backend) {
	m := newCountMetrics()
	e := bk.setup(t, Config{LogCheck: 200 * time.Millisecond, Metrics: m})
	ca, cb := dial(t, e.a.url+"u1"), dial(t, e.b.url+"u1")
	ca.greet(0)
	cb.greet(0)
	emit(t, e.a.hub, e.hist, "u1", 0)
	for _, c := range []*wsClient{ca, cb} {
		seqs, _ := c.seqsUntil(1, 5*time.Second)
		checkSeqs(t, seqs, []int64{1})
	}
	time.Sleep(500 * time.Millisecond) // checks that find nothing
	if got := m.get("CatchUp:" + CatchUpLog); got != 0 {
		t.Fatalf("%d log catch-ups with nothing lost", got)
	}
	e.hist.add("u1", 0) // committed; the writer dies before publishing
	start := time.Now()
	for _, c := range []*wsClient{ca, cb} {
		seqs, _ := c.seqsUntil(2, 5*time.Second)
		checkSeqs(t, seqs, []int64{2})
	}
	t.Logf("the lost event arrived after %v (LogCheck 200ms)", time.Since(start))
	if got := m.get("CatchUp:" + CatchUpLog); got < 1 {
		t.Errorf("CatchUp(log) = %d, want at least 1", got)
	}
	emit(t, e.a.hub, e.hist, "u1", 0) // and live delivery goes on, without a gap wait
	for _, c := range []*wsClient{ca, cb} {
		seqs, _ := c.seqsUntil(3, 5*time.Second)
		checkSeqs(t, seqs, []int64{3})
	}
	if got := m.get("GapExpired"); got != 0 {
		t.Errorf("GapExpired = %d after the log check delivered the lost event", got)
	}
}

func testGap(t *testing.T, bk backend) {
	e := bk.setup(t, Config{})
	c := dial(t, e.b.url+"u1")
	c.greet(0)
	emit(t, e.a.hub, e.hist, "u1", 0)
	e.hist.add("u1", 0) // committed, but its publication is lost
	e.hist.add("u1", 0)
	emit(t, e.a.hub, e.hist, "u1", 0)
	emit(t, e.a.hub, e.hist, "u1", 0)
	seqs, _ := c.seqsUntil(5, 5*time.Second)
	checkSeqs(t, seqs, span(1, 5))
}

// testOutOfOrder: publications that reach the replicas out of seq order (published by
// several requests after their commits) are delivered in order without reading the
// event log; one that never comes is read from the log after GapWait.
func testOutOfOrder(t *testing.T, bk backend) {
	m := newCountMetrics()
	e := bk.setup(t, Config{GapWait: 300 * time.Millisecond, Metrics: m})
	ca, cb := dial(t, e.a.url+"u1"), dial(t, e.b.url+"u1")
	ca.greet(0)
	cb.greet(0)
	replayed := m.get("EventsReplayed")

	const n = 200
	pubs := make([]Publication, n)
	for i := range pubs {
		pubs[i] = e.hist.add("u1", 0)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range pubs { // each displaced by up to 10 places
		j := min(n-1, i+r.IntN(10))
		pubs[i], pubs[j] = pubs[j], pubs[i]
	}
	for i, p := range pubs {
		hub := e.a.hub
		if i%2 == 1 {
			hub = e.b.hub
		}
		if err := hub.Publish(context.Background(), "u1", p); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []*wsClient{ca, cb} {
		seqs, _ := c.seqsUntil(n, 10*time.Second)
		checkSeqs(t, seqs, span(1, n))
	}
	if got := m.get("CatchUp:" + CatchUpGap); got != 0 {
		t.Errorf("%d gap catch-ups for publications that were only out of order", got)
	}
	if m.get("EventHeld") == 0 || m.get("GapExpired") != 0 {
		t.Errorf("EventHeld %d (want some), GapExpired %d (want 0)", m.get("EventHeld"), m.get("GapExpired"))
	}
	if got := m.get("EventsReplayed") - replayed; got != 0 {
		t.Errorf("%d events read from the log for publications that were only out of order", got)
	}

	e.hist.add("u1", 0) // committed, never published
	start := time.Now()
	emit(t, e.a.hub, e.hist, "u1", 0)
	for _, c := range []*wsClient{ca, cb} {
		seqs, _ := c.seqsUntil(n+2, 10*time.Second)
		checkSeqs(t, seqs, span(n+1, n+2))
	}
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Errorf("the lost publication was read from the log after %v, before GapWait", waited)
	}
	if got := m.get("CatchUp:" + CatchUpGap); got < 2 {
		t.Errorf("gap catch-ups = %d, want one per socket", got)
	}
	if got := m.get("GapExpired"); got < 1 {
		t.Errorf("GapExpired = %d, want at least 1", got)
	}
}

// testEphemeral: ephemeral publications reach every socket of the user exactly once, in
// the order their replica published them (its own sockets directly, the others through
// the broker).
func testEphemeral(t *testing.T, bk backend) {
	e := bk.setup(t, Config{})
	ca, cb := dial(t, e.a.url+"u1"), dial(t, e.b.url+"u1")
	ca.greet(0)
	cb.greet(0)
	const n = 30
	hubs := []*Hub{e.a.hub, e.b.hub}
	for i := range n {
		for h, hub := range hubs {
			tok := fmt.Appendf(nil, `{"type":"chat.token","user":"%d","seq":%d}`, h, i)
			if err := hub.Publish(context.Background(), "u1", Publication{Data: tok}); err != nil {
				t.Fatal(err)
			}
		}
		emit(t, e.a.hub, e.hist, "u1", 0)
	}
	for _, c := range []*wsClient{ca, cb} {
		seqs, others := c.seqsUntil(n, 10*time.Second)
		checkSeqs(t, seqs, span(1, n))
		for len(others) < 2*n {
			others = append(others, c.next())
		}
		if f, err := c.read(200 * time.Millisecond); err == nil {
			t.Fatalf("unexpected frame after the last: %+v", f)
		}
		got := map[string][]int64{}
		for _, f := range others {
			got[f.User] = append(got[f.User], f.Seq)
		}
		for h := range hubs {
			checkSeqs(t, got[fmt.Sprint(h)], span(0, n-1))
		}
	}
}

func testDirty(t *testing.T, bk backend) {
	e := bk.setup(t, Config{})
	for range 10 {
		e.hist.add("u1", 0)
	}
	c := dial(t, e.b.url+"u1")
	c.expect("hello")
	e.hist.sinceDelay.Store(int64(200 * time.Millisecond))
	c.send(`{"type":"resume","since":0}`)
	time.Sleep(50 * time.Millisecond) // the replay read 1..10 and is still "running"
	e.hist.sinceDelay.Store(0)
	for range 3 { // dropped live, as the replay runs: the replay must read again
		emit(t, e.a.hub, e.hist, "u1", 0)
	}
	seqs, _ := c.seqsUntil(13, 5*time.Second)
	checkSeqs(t, seqs, span(1, 13))
	if f := c.expect("resumed"); f.Seq != 13 || f.Replayed != 13 {
		t.Fatalf("resumed = %+v, want seq 13 replayed 13", f)
	}
}

func testHistoryError(t *testing.T, bk backend) {
	e := bk.setup(t, Config{})
	for range 10 {
		e.hist.add("u1", 0)
	}
	c := dial(t, e.b.url+"u1")
	c.expect("hello")
	e.hist.failSince.Store(2)
	c.send(`{"type":"resume","since":0}`)
	seqs, others := c.seqsUntil(10, 10*time.Second)
	checkSeqs(t, seqs, span(1, 10))
	if f := c.expect("resumed"); f.Replayed != 10 || len(others) != 0 {
		t.Fatalf("resumed = %+v, others %+v", f, others)
	}
}

func testIsolation(t *testing.T, bk backend) {
	e := bk.setup(t, Config{})
	u1 := dial(t, e.b.url+"u1")
	u2b := dial(t, e.b.url+"u2")
	u2a := dial(t, e.a.url+"u2")
	for _, c := range []*wsClient{u1, u2b, u2a} {
		c.greet(0)
	}
	for range 50 {
		emit(t, e.a.hub, e.hist, "u1", 0)
	}
	_ = e.a.hub.Publish(context.Background(), "u1", Publication{Data: []byte(`{"type":"chat.token","user":"u1"}`)})
	emit(t, e.a.hub, e.hist, "u2", 0)
	seqs, _ := u1.seqsUntil(50, 10*time.Second)
	checkSeqs(t, seqs, span(1, 50))
	for _, c := range []*wsClient{u2b, u2a} {
		f := c.next()
		if f.User != "u2" || f.Seq != 1 {
			t.Fatalf("u2's socket got %+v, want u2's seq 1", f)
		}
	}
}

func testSlowConsumer(t *testing.T, bk backend) {
	e := bk.setup(t, Config{QueueSize: 4})
	d := &fws.Dialer{
		HandshakeTimeout: 5 * time.Second,
		ReadBufferSize:   1024,
		NetDialContext:   (&net.Dialer{Control: smallRcvBuf}).DialContext,
	}
	slow := dialWith(t, d, e.a.url+"u1")
	fast := dial(t, e.b.url+"u1")
	slow.greet(0)
	fast.greet(0)
	// 200 x 64 KiB is far more than the TCP buffers hold: the slow socket's queue
	// overflows. The fast one reads each event before the next is published.
	const n = 200
	for i := int64(1); i <= n; i++ {
		emit(t, e.a.hub, e.hist, "u1", 64<<10)
		seqs, _ := fast.seqsUntil(i, 10*time.Second)
		checkSeqs(t, seqs, []int64{i})
	}
	slow.expectClose(CloseSlowConsumer, 10*time.Second)
	want := 0 // the slow socket is on replica a, the fast one on b
	if e.a == e.b {
		want = 1
	}
	waitFor(t, "slow socket unregistered", func() bool { return e.a.hub.Conns() == want })
	// The fast socket still works.
	emit(t, e.a.hub, e.hist, "u1", 0)
	seqs, _ := fast.seqsUntil(n+1, 5*time.Second)
	checkSeqs(t, seqs, []int64{n + 1})
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testExpiry(t *testing.T, bk backend) {
	e := bk.setup(t, Config{})
	exp := strconv.FormatInt(time.Now().Add(700*time.Millisecond).UnixMilli(), 10)
	expiring := dial(t, e.b.url+"u1?exp_ms="+exp)
	refreshed := dial(t, e.b.url+"u1?exp_ms="+exp)
	expiring.expect("hello")
	refreshed.expect("hello")
	refreshed.send(`{"type":"auth"}`)
	refreshed.expect("auth.ok")
	expiring.expectClose(CloseTokenExpired, 5*time.Second)
	time.Sleep(300 * time.Millisecond)
	refreshed.send(`{"type":"ping"}`)
	refreshed.expect("pong")

	past := strconv.FormatInt(time.Now().Add(-time.Second).UnixMilli(), 10)
	expired := dial(t, e.b.url+"u1?exp_ms="+past)
	expired.expectClose(CloseTokenExpired, 5*time.Second)
}

func testShutdown(t *testing.T, bk backend) {
	e := bk.setup(t, Config{})
	var cs []*wsClient
	for _, u := range []string{"u1", "u1", "u2"} {
		c := dial(t, e.b.url+u)
		c.greet(0)
		cs = append(cs, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.b.hub.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if got := e.b.hub.Conns(); got != 0 {
		t.Fatalf("Conns() = %d after Shutdown", got)
	}
	for _, c := range cs {
		c.expectClose(CloseGoingAway, 5*time.Second)
	}
	late := dial(t, e.b.url+"u1")
	late.expectClose(CloseGoingAway, 5*time.Second)
}

func testCaps(t *testing.T, bk backend) {
	e := bk.setup(t, Config{MaxConnsPerUser: 2, MaxConns: 3})
	for range 2 {
		dial(t, e.b.url+"u1").expect("hello")
	}
	dial(t, e.b.url+"u1").expectClose(CloseTooManyConnections, 5*time.Second)
	dial(t, e.b.url+"u2").expect("hello")
	dial(t, e.b.url+"u3").expectClose(CloseReplicaFull, 5*time.Second)
	waitFor(t, "refused sockets gone", func() bool { return e.b.hub.Conns() == 3 })
}

func testPingPong(t *testing.T, bk backend) {
	e := bk.setup(t, Config{})
	c := dial(t, e.b.url+"u1")
	c.expect("hello")
	c.send(`{"type":"ping"}`)
	c.expect("pong")
}

func testDeadPeer(t *testing.T, bk backend) {
	e := bk.setup(t, Config{PingInterval: 100 * time.Millisecond, PongTimeout: 100 * time.Millisecond})
	alive := dial(t, e.b.url+"u1")
	dead := dial(t, e.b.url+"u1") // never reads, so never answers the server's pings
	_ = dead
	alive.expect("hello")
	// alive only reads: the dialer's default ping handler answers the server's pings.
	reading := make(chan struct{})
	go func() {
		defer close(reading)
		_ = alive.conn.SetReadDeadline(time.Time{})
		for {
			if _, _, err := alive.conn.ReadMessage(); err != nil {
				return
			}
		}
	}()
	waitFor(t, "dead socket dropped", func() bool { return e.b.hub.Conns() == 1 })
	time.Sleep(600 * time.Millisecond) // many ping intervals
	if got := e.b.hub.Conns(); got != 1 {
		t.Fatalf("Conns() = %d, want the live socket only", got)
	}
	_ = alive.conn.Close()
	<-reading
}

func testBadFrames(t *testing.T, bk backend) {
	e := bk.setup(t, Config{})
	c := dial(t, e.b.url+"u1")
	c.expect("hello")
	for _, bad := range []string{`not json`, `{"x":1}`, `[]`, `{"type":""}`} {
		c.send(bad)
		if f := c.expect("error"); f.Code != ErrorBadRequest {
			t.Fatalf("%s: got %+v", bad, f)
		}
	}
	if err := c.conn.WriteMessage(fws.BinaryMessage, []byte{1, 2}); err != nil {
		t.Fatal(err)
	}
	if f := c.expect("error"); f.Code != ErrorBadRequest {
		t.Fatalf("binary: got %+v", f)
	}
	c.send(`{"type":"ping"}`)
	c.expect("pong") // still open

	nofh := dial(t, e.b.url+"u1?nofh=1")
	nofh.expect("hello")
	nofh.send(`{"type":"chat","message":"hi"}`)
	if f := nofh.expect("error"); f.Code != ErrorBadRequest {
		t.Fatalf("unknown type: got %+v", f)
	}
}

func testRateLimit(t *testing.T, bk backend) {
	e := bk.setup(t, Config{RateLimit: 1, RateBurst: 3})
	c := dial(t, e.b.url+"u1")
	c.expect("hello")
	for range 10 {
		c.send(`{"type":"ping"}`)
	}
	for range 3 {
		c.expect("pong")
	}
	if f := c.expect("error"); f.Code != ErrorRateLimited {
		t.Fatalf("got %+v, want rate_limited", f)
	}
	if f, err := c.read(300 * time.Millisecond); err == nil {
		t.Fatalf("got %+v, want nothing more", f)
	}
}

func testPanic(t *testing.T, bk backend) {
	e := bk.setup(t, Config{})
	c := dial(t, e.b.url+"u1")
	c.expect("hello")
	c.send(`{"type":"panic"}`)
	c.expectClose(CloseInternalError, 5*time.Second)
	c = dial(t, e.b.url+"u1")
	c.expect("hello")
	c.send(`{"type":"ping"}`)
	c.expect("pong")
}

func testTooBig(t *testing.T, bk backend) {
	e := bk.setup(t, Config{MaxMessageSize: 1024})
	c := dial(t, e.b.url+"u1")
	c.expect("hello")
	c.send(`{"type":"echo","pad":"` + strings.Repeat("x", 2000) + `"}`)
	c.expectClose(CloseMessageTooBig, 5*time.Second)
}

func testPubSubKilled(t *testing.T, bk backend) {
	e := bk.setup(t, Config{ReplayBatch: 50})
	cs := []*wsClient{dial(t, e.a.url+"u1"), dial(t, e.b.url+"u1"), dial(t, e.b.url+"u1")}
	for _, c := range cs {
		c.greet(0)
	}
	const total = 400
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; i <= total; i++ {
			emit(t, e.a.hub, e.hist, "u1", 0)
			if i == 100 || i == 250 {
				if n := e.killPubSub(t); n != 2 {
					t.Errorf("killed %d pubsub connections, want 2", n)
				}
			}
			time.Sleep(time.Millisecond)
		}
	}()
	for i, c := range cs {
		seqs, _ := c.seqsUntil(total, 30*time.Second)
		if !slices.Equal(seqs, span(1, total)) {
			t.Errorf("socket %d: got %d seqs %v", i, len(seqs), abbreviate(seqs))
		}
	}
	wg.Wait()
	for i, c := range cs {
		if f, err := c.read(200 * time.Millisecond); err == nil {
			t.Errorf("socket %d: unexpected frame %+v", i, f)
		}
	}
}

// TestNoGoroutineLeak checks that a replica leaves no goroutine behind once its sockets,
// hub, app and broker are closed.
func TestNoGoroutineLeak(t *testing.T) {
	for _, bk := range backends {
		t.Run(bk.name, func(t *testing.T) {
			scenario := func(t *testing.T) {
				e := bk.setup(t, Config{})
				c1 := dial(t, e.b.url+"u1")
				c2 := dial(t, e.a.url+"u1")
				c1.greet(0)
				c2.expect("hello") // live at once
				for range 20 {
					emit(t, e.a.hub, e.hist, "u1", 0)
				}
				c1.seqsUntil(20, 5*time.Second)
				c2.seqsUntil(20, 5*time.Second)
				_ = c1.conn.WriteControl(fws.CloseMessage, fws.FormatCloseMessage(fws.CloseNormalClosure, ""), time.Now().Add(time.Second))
				_ = c1.conn.Close()
			}
			t.Run("warmup", scenario)
			before := runtime.NumGoroutine()
			t.Run("run", scenario)
			deadline := time.Now().Add(10 * time.Second)
			for runtime.NumGoroutine() > before {
				if time.Now().After(deadline) {
					var b strings.Builder
					_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
					t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), before, b.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}
