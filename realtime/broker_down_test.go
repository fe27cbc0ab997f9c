package realtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// privateRedis is a redis-server of the test's own, to stop and start.
type privateRedis struct {
	port int
	cmd  *exec.Cmd
}

func startPrivateRedis(t testing.TB) *privateRedis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip("no redis-server:", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &privateRedis{port: ln.Addr().(*net.TCPAddr).Port}
	ln.Close()
	r.start(t)
	t.Cleanup(r.stop)
	return r
}

func (r *privateRedis) addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

func (r *privateRedis) start(t testing.TB) {
	t.Helper()
	r.cmd = exec.Command("redis-server", "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no")
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: r.addr(), MaxRetries: -1})
	defer c.Close()
	waitFor(t, "private redis-server", func() bool { return c.Ping(context.Background()).Err() == nil })
}

func (r *privateRedis) stop() {
	if r.cmd != nil {
		r.cmd.Process.Kill()
		r.cmd.Wait()
		r.cmd = nil
	}
}

// logBuffer is a slog handler's output, safe to read while written.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

// TestRedisBrokerRedisDown: while Redis is down a publish does not wait for it (the
// first fails within publishTimeout, the rest are skipped at once), the outage is
// logged once when it starts and once when it ends, and publishing works again after.
func TestRedisBrokerRedisDown(t *testing.T) {
	ctx := context.Background()
	rs := startPrivateRedis(t)
	var logs logBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	pub, err := NewRedisBroker(redis.NewClient(&redis.Options{Addr: rs.addr(), ContextTimeoutEnabled: true}), "p:", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Close() })
	sub := newRedisBroker(t, redis.NewClient(&redis.Options{Addr: rs.addr(), ContextTimeoutEnabled: true}), "p:")
	r := newRecorder()
	sub.RegisterEventHandler(r)
	if err := sub.Subscribe(ctx, "user:a"); err != nil {
		t.Fatal(err)
	}
	msg := func(seq int64) []byte { return encodePublication(Publication{Seq: seq, Data: []byte(`{}`)}) }
	if err := pub.Publish(ctx, "user:a", msg(1)); err != nil {
		t.Fatal(err)
	}
	r.expect(t, "user:a", msg(1))

	rs.stop()
	failed := 0
	start := time.Now()
	for seq := int64(2); seq <= 201; seq++ {
		if err := pub.Publish(ctx, "user:a", msg(seq)); err != nil {
			failed++
		}
	}
	took := time.Since(start)
	// Before: every publish retried its dial (about 200 ms each, 40 s for these).
	if failed > 1 || took > publishTimeout+5*time.Second {
		t.Fatalf("with Redis down: %d of 200 publishes failed, in %v; want at most 1, at most publishTimeout", failed, took)
	}
	if n := logs.count("publishing is skipped"); n != 1 {
		t.Fatalf("outage logged %d times, want once:\n%s", n, logs.b.String())
	}

	rs.start(t)
	waitFor(t, "publishing resumed", func() bool { return logs.count("publishing resumed") == 1 })
	waitFor(t, "the subscriber resubscribed", func() bool { return r.resubs.Load() > 0 })
	if err := pub.Publish(ctx, "user:a", msg(202)); err != nil {
		t.Fatal(err)
	}
	// The republished last skipped one (seq 201) may come first, once: the probe
	// republishes it outside the publish queue, so it may also come after 202 (unread).
	for got := 0; got < 2; {
		select {
		case m := <-r.pubs:
			switch {
			case bytes.Equal(m.data, msg(202)):
				got = 2
			case bytes.Equal(m.data, msg(201)) && got == 0:
				got = 1
			default:
				t.Fatalf("after the outage got %q, want the last skipped (seq 201) at most once, then 202", m.data)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no publication of seq 202 after the outage")
		}
	}
	if n := logs.count("publishing is skipped"); n != 1 {
		t.Fatalf("outage logged %d times, want once", n)
	}
}

// TestRedisBrokerNudge: a subscriber whose connection survived a publisher's outage
// gets the last sequenced publication skipped on each channel once Redis answers the
// publisher again (it sees the gap and reads the log), not the ones before it.
func TestRedisBrokerNudge(t *testing.T) {
	ctx := context.Background()
	rs := startPrivateRedis(t)
	admin := redis.NewClient(&redis.Options{Addr: rs.addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { admin.Close() })
	pub := newRedisBroker(t, redis.NewClient(&redis.Options{Addr: rs.addr(), ContextTimeoutEnabled: true}), "p:")
	sub := newRedisBroker(t, redis.NewClient(&redis.Options{Addr: rs.addr(), ContextTimeoutEnabled: true}), "p:")
	r := newRecorder()
	sub.RegisterEventHandler(r)
	if err := sub.Subscribe(ctx, "user:a", "user:b"); err != nil {
		t.Fatal(err)
	}
	msg := func(seq int64) []byte { return encodePublication(Publication{Seq: seq, Data: []byte(fmt.Sprint(seq))}) }
	// Paused, the publish times out and marks Redis down for the publisher;
	// the subscriber's connection is untouched.
	if err := admin.Do(ctx, "CLIENT", "PAUSE", "1500", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, "user:a", msg(1)); err == nil {
		t.Fatal("publish into a paused Redis succeeded")
	}
	for _, seq := range []int64{2, 3, 4} {
		if err := pub.Publish(ctx, "user:a", msg(seq)); err != nil {
			t.Fatalf("publish %d while down: %v (want skipped)", seq, err)
		}
	}
	if err := pub.Publish(ctx, "user:b", msg(7)); err != nil {
		t.Fatal(err)
	}
	// An ephemeral one (seq <= 0) is not republished.
	if err := pub.Publish(ctx, "user:b", encodePublication(Publication{Seq: -5, Data: []byte("tok")})); err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	deadline := time.After(10 * time.Second)
	for len(got["user:a"]) == 0 || len(got["user:b"]) == 0 {
		select {
		case m := <-r.pubs:
			p, _ := decodePublication(m.data)
			if p.Seq != 1 { // the timed-out publish may have run after the pause
				got[m.channel] = append(got[m.channel], string(p.Data))
			}
		case <-deadline:
			t.Fatalf("no republished publications: %v", got)
		}
	}
	r.expectNone(t, 300*time.Millisecond)
	if fmt.Sprint(got) != "map[user:a:[4] user:b:[7]]" {
		t.Fatalf("republished %v, want the last sequenced one of each channel", got)
	}
	if r.resubs.Load() != 0 {
		t.Fatal("the subscriber reconnected: the test needs its connection to survive")
	}
}

// TestRedisBrokerQueueFull: while Redis hangs, PublishAsync never waits for it: once a
// bucket's queue holds maxQueuedPublishes, further publications are dropped at once
// (done gets errPublishQueueFull; their sockets on other replicas read the log).
func TestRedisBrokerQueueFull(t *testing.T) {
	ctx := context.Background()
	rs := startPrivateRedis(t)
	admin := redis.NewClient(&redis.Options{Addr: rs.addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { admin.Close() })
	pub := newRedisBroker(t, redis.NewClient(&redis.Options{Addr: rs.addr(), ContextTimeoutEnabled: true}), "p:")
	if err := pub.Publish(ctx, "user:a", []byte("warm")); err != nil {
		t.Fatal(err)
	}
	if err := admin.Do(ctx, "CLIENT", "PAUSE", "2000", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	var dropped, other atomic.Int64
	n := maxQueuedPublishes + maxPipeline + 500
	start := time.Now()
	for i := range n {
		pub.PublishAsync("user:a", []byte(fmt.Sprint(i)), func(err error) {
			switch {
			case errors.Is(err, errPublishQueueFull):
				dropped.Add(1)
			case err != nil:
				other.Add(1)
			}
		})
	}
	if took := time.Since(start); took > publishTimeout/2 {
		t.Fatalf("%d PublishAsync calls into a hung Redis took %v: they waited for it", n, took)
	}
	if dropped.Load() < 500 {
		t.Fatalf("%d of %d publications dropped, want at least 500 (the queue holds %d, a pipeline %d)", dropped.Load(), n, maxQueuedPublishes, maxPipeline)
	}
}
