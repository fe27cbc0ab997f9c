package app

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/evotodo/evo/store/storetest"
)

// startPrivateRedis runs a redis-server of the test's own on a free port and returns
// its URL and a function that kills it (also run at the end of the test).
func startPrivateRedis(t *testing.T) (string, func()) {
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
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	cmd := exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop := func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	t.Cleanup(stop)
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + port, MaxRetries: -1})
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); c.Ping(context.Background()).Err() != nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("private redis-server did not answer")
		}
	}
	return "redis://127.0.0.1:" + port + "/0", stop
}

// TestRedisDownWrites: with Redis gone, REST writes still succeed and none waits on
// Redis: not on reconnects for its publish (they took ~200 ms each: go-redis retried
// its dial for every publish), nor for the rate limit's lease of tokens, the writes
// that need one before the broker has noticed that Redis is down (one took 1.7 s:
// go-redis tried each dial 5 times, 100 ms apart, for each of a command's retries).
func TestRedisDownWrites(t *testing.T) {
	url, stop := startPrivateRedis(t)
	ts := startServer(t, "sqlite", map[string]string{"REDIS_URL": url, "RATE_LIMIT_WRITES": "40"}) // a lease of 2 writes
	_, tok := ts.user(t)
	ts.createTodo(t, tok, "with Redis")
	stop()
	const n = 20
	var slowest time.Duration
	start := time.Now()
	for i := range n {
		t0 := time.Now()
		ts.createTodo(t, tok, "without Redis "+strconv.Itoa(i))
		slowest = max(slowest, time.Since(t0))
	}
	t.Logf("%d writes with Redis down: %v each, the slowest %v", n, time.Since(start)/n, slowest)
	if slowest > 500*time.Millisecond {
		t.Fatalf("a write with Redis down took %v", slowest)
	}
}

// TestRedisLogger: go-redis's own lines (here: a dial that failed) come out of the
// server's slog handler.
func TestRedisLogger(t *testing.T) {
	var buf syncBuffer
	redis.SetLogger(redisLogger{slog.New(slog.NewJSONHandler(&buf, nil))})
	t.Cleanup(func() { redis.SetLogger(redisLogger{storetest.Quiet()}) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 1, MaxRetries: -1})
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(buf.String(), `"component":"go-redis"`); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no go-redis line in the slog handler: %q", buf.String())
		}
		c.Ping(context.Background())
	}
	if !strings.Contains(buf.String(), `"level":"WARN"`) {
		t.Fatalf("go-redis line not a WARN: %q", buf.String())
	}
}

// TestRedisURL: REDIS_URL names one Redis or a cluster; REDIS_PREFIX may not hold
// the braces of hash tags.
func TestRedisURL(t *testing.T) {
	o, err := redisOptions("redis+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002?dial_timeout=2s")
	if err != nil {
		t.Fatal(err)
	}
	if o.single != nil || strings.Join(o.cluster.Addrs, " ") != "10.0.0.1:7000 10.0.0.2:7001 [::1]:7002" ||
		o.cluster.Username != "u" || o.cluster.Password != "p@ss" || o.cluster.DialTimeout != 2*time.Second ||
		o.cluster.ClusterStateReloadInterval != clusterStateReload || o.cluster.TLSConfig != nil {
		t.Fatalf("cluster options: %+v", o.cluster)
	}
	if o, err := redisOptions("rediss+cluster://h:1"); err != nil || o.cluster.TLSConfig == nil {
		t.Fatalf("rediss+cluster: %+v, %v", o.cluster, err)
	}
	if o, err := redisOptions("redis://h:6380/2"); err != nil || o.single.Addr != "h:6380" || o.single.DB != 2 {
		t.Fatalf("redis://: %+v, %v", o.single, err)
	}
	for _, bad := range []map[string]string{
		{"REDIS_URL": "redis+cluster://h:1/0"},
		{"REDIS_URL": "redis+cluster://h:1,,h:2"},
		{"REDIS_URL": "redis+cluster://h"},
		{"REDIS_URL": "redis+cluster://h:1?nonsense=1"},
		{"REDIS_URL": "cluster://h:1"},
		{"REDIS_PREFIX": "evo{x}:"},
		{"REDIS_PREFIX": "two words"},
	} {
		_, err := LoadConfig(func(k string) string { return bad[k] })
		for k := range bad {
			if err == nil || !strings.Contains(err.Error(), k) {
				t.Errorf("%v: got %v, want an error naming %s", bad, err, k)
			}
		}
	}
	cfg, err := LoadConfig(func(k string) string { return map[string]string{"REDIS_URL": "redis+cluster://127.0.0.1:7000"}[k] })
	if err != nil || cfg.RedisPrefix != "evo:" {
		t.Fatalf("default REDIS_PREFIX: %q, %v", cfg.RedisPrefix, err)
	}
	if k := rateKey("evo:", "writes", "u1"); k != "evo:{u1}:writes" {
		t.Fatalf("rate key %q", k)
	}
}

// TestRedisPrefix: the broker's channels and the rate limits' keys start with
// REDIS_PREFIX, so that two deployments can share a Redis.
func TestRedisPrefix(t *testing.T) {
	url := redisURL(t)
	prefix := "evotest" + strings.ToLower(rand.Text()[:8]) + ":"
	ts := startServer(t, "sqlite", map[string]string{"REDIS_URL": url, "REDIS_PREFIX": prefix})
	u, tok := ts.user(t)
	opts, _ := redis.ParseURL(url)
	rc := redis.NewClient(opts)
	defer rc.Close()
	ctx := context.Background()
	ps := rc.Subscribe(ctx, prefix+"user:"+u.ID)
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	ts.createTodo(t, tok, "prefixed")
	msg, err := ps.ReceiveTimeout(ctx, 10*time.Second)
	if err != nil {
		t.Fatalf("nothing on %suser:%s: %v", prefix, u.ID, err)
	}
	if m, ok := msg.(*redis.Message); !ok || !strings.Contains(m.Payload, "prefixed") {
		t.Fatalf("got %#v", msg)
	}
	if n, err := rc.Exists(ctx, "rate:"+prefix+"{"+u.ID+"}:writes").Result(); err != nil || n != 1 {
		t.Fatalf("rate-limit key rate:%s{%s}:writes: exists %d, %v", prefix, u.ID, n, err)
	}
}
