package app

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/evotodo/evo/store"
	"github.com/evotodo/evo/store/storetest"
)

// TestRateLimitMemoryBuckets: a bucket holds a minute's allowance, refills
// one every 60/n seconds, is per user, and full buckets are forgotten once
// there are many users.
func TestRateLimitMemoryBuckets(t *testing.T) {
	m := newMemoryBuckets(3)
	t0 := time.Now()
	for i := range 3 {
		if d := m.take("u1", t0); d != 0 {
			t.Fatalf("take %d: got wait %v, want none", i, d)
		}
	}
	if d := m.take("u1", t0); d < 19*time.Second || d > 20*time.Second {
		t.Fatalf("4th take: got wait %v, want about 20s", d)
	}
	if d := m.take("u2", t0); d != 0 {
		t.Fatalf("another user: got wait %v", d)
	}
	if d := m.take("u1", t0.Add(20*time.Second)); d != 0 {
		t.Fatalf("after 20s: got wait %v, want none", d)
	}
	if d := m.take("u1", t0.Add(20*time.Second)); d == 0 {
		t.Fatal("right after the refill: got no wait")
	}

	for i := range maxBucketUsers {
		m.take(strconv.Itoa(i), t0)
	}
	m.take("late", t0.Add(2*time.Minute)) // every other bucket is full again
	if n := len(m.users); n != 1 {
		t.Fatalf("after a sweep: %d buckets kept, want 1", n)
	}
}

// TestRateLimitWrites: REST writes beyond RATE_LIMIT_WRITES a minute are
// 429 rate_limited with Retry-After, per user; reads are not limited. With
// Redis, two replicas share one budget per user; without it each replica
// counts on its own.
func TestRateLimitWrites(t *testing.T) {
	t.Run("Memory", func(t *testing.T) {
		ts := startServer(t, "sqlite", map[string]string{"RATE_LIMIT_WRITES": "3"})
		_, tok := ts.user(t)
		_, other := ts.user(t)
		todo := ts.createTodo(t, tok, "one")
		ts.do(t, "PATCH", "/api/todos/"+todo.ID, tok, map[string]bool{"is_complete": true})
		ts.do(t, "PUT", "/api/todos/"+todo.ID, tok, map[string]string{"title": "uno"})
		expectLimited(t, ts, "DELETE", "/api/todos/"+todo.ID, tok, 3)
		if status, body := ts.do(t, "GET", "/api/todos/"+todo.ID, tok, nil); status != http.StatusOK {
			t.Fatalf("a read after the limit: got %d %s", status, body)
		}
		ts.createTodo(t, other, "another user's budget is their own")
	})
	t.Run("RedisAcrossReplicas", func(t *testing.T) {
		js := newJWKSServer(t)
		env := map[string]string{"DATABASE_URL": storetest.PostgresURL(t), "REDIS_URL": redisURL(t), "RATE_LIMIT_WRITES": "4"}
		a, b := startReplica(t, js, "postgres", env), startReplica(t, js, "postgres", env)
		_, tok := a.user(t)
		a.createTodo(t, tok, "1")
		b.createTodo(t, tok, "2")
		a.createTodo(t, tok, "3")
		b.createTodo(t, tok, "4")
		// Each replica saw 2 writes: only the shared budget is used up.
		expectLimited(t, a, "POST", "/api/todos", tok, 4)
		expectLimited(t, b, "POST", "/api/todos", tok, 4)
	})
}

// TestRateLimitMCPWrites: MCP tool calls that write draw on the user's
// RATE_LIMIT_WRITES budget, the one REST writes use; over it they are
// rate_limited tool errors and change nothing; list_tasks is not limited.
func TestRateLimitMCPWrites(t *testing.T) {
	ts := startServer(t, "sqlite", map[string]string{"RATE_LIMIT_WRITES": "3"})
	_, tok := ts.user(t)
	c, done := mcpHTTP(ts, false)(t, tok)
	defer done()
	mcpCall(t, c, "add_task", map[string]string{"title": "one"})
	mcpCall(t, c, "add_task", map[string]string{"title": "two"})
	ts.createTodo(t, tok, "three")
	res := mcpCall(t, c, "add_task", map[string]string{"title": "over"})
	if got := mcpText(t, res); !res.IsError || !strings.HasPrefix(got, "rate_limited: too many writes: at most 3 a minute; try again in ") {
		t.Fatalf("4th write through MCP: got isError=%v %q, want rate_limited", res.IsError, got)
	}
	if got := mcpText(t, mcpCall(t, c, "list_tasks", nil)); strings.Contains(got, "over") {
		t.Fatalf("the refused add_task created a todo: %s", got)
	}
	if n := restTodos(t, ts, tok).Total; n != 3 {
		t.Fatalf("todos after the refused call: %d, want 3", n)
	}
	expectLimited(t, ts, "POST", "/api/todos", tok, 3)
}

// expectLimited sends a write that must be refused by a limit of perMinute.
func expectLimited(t *testing.T, ts *testServer, method, path, token string, perMinute int) {
	t.Helper()
	res, body := call(t, ts, method, path, token, map[string]string{"title": "over"})
	eb := decode[ErrorBody](t, body)
	if res.StatusCode != http.StatusTooManyRequests || eb.Code != store.CodeRateLimited || eb.Detail == "" {
		t.Fatalf("%s %s: got %d %s, want 429 rate_limited", method, path, res.StatusCode, body)
	}
	retry, err := strconv.Atoi(res.Header.Get("Retry-After"))
	if most := 60 / perMinute; err != nil || retry < 1 || retry > most {
		t.Fatalf("Retry-After: got %q, want 1-%d seconds", res.Header.Get("Retry-After"), 60/perMinute)
	}
	if want := fmt.Sprintf("too many writes: at most %d a minute; try again in %ds", perMinute, retry); eb.Detail != want {
		t.Fatalf("detail: got %q, want %q", eb.Detail, want)
	}
}

// TestRateLimitConfig: RATE_LIMIT_WRITES defaults to 120 and must be a
// positive integer; METRICS_TOKEN is empty by default and long if set.
func TestRateLimitConfig(t *testing.T) {
	cfg, err := LoadConfig(getenv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RateLimitWrites != 120 || cfg.MetricsToken != "" {
		t.Fatalf("defaults: RATE_LIMIT_WRITES %d, METRICS_TOKEN %q", cfg.RateLimitWrites, cfg.MetricsToken)
	}
	for _, tt := range []struct{ name, value, want string }{
		{"RATE_LIMIT_WRITES", "0", "RATE_LIMIT_WRITES: must be positive"},
		{"RATE_LIMIT_WRITES", "lots", "RATE_LIMIT_WRITES: must be a valid int"},
		{"METRICS_TOKEN", "short", "METRICS_TOKEN: must be at least 16 characters"},
		{"METRICS_TOKEN", "has a space in the middle", "METRICS_TOKEN: must be at least 16 characters"},
	} {
		_, err := LoadConfig(getenv(map[string]string{tt.name: tt.value}))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s=%q: got %v, want an error containing %q", tt.name, tt.value, err, tt.want)
		}
	}
}

// BenchmarkUserLimit is the write limit's cost per request: with Redis (the GCRA script
// of redis_rate, one round trip), next to a bare PING round trip on the same client, and
// in memory. 8 callers per GOMAXPROCS, 64 users.
func BenchmarkUserLimit(b *testing.B) {
	opts, _ := redis.ParseURL(redisURL(b))
	rc := redis.NewClient(opts)
	b.Cleanup(func() { rc.Close() })
	prefix := strings.ToLower(rand.Text()[:8])
	users := make([]string, 64)
	for i := range users {
		users[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	s := &Server{log: storetest.Quiet(), metrics: newMetrics(Config{})}
	parallel := func(b *testing.B, f func(ctx context.Context, user string) error) {
		var next atomic.Int64
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			for pb.Next() {
				if err := f(ctx, users[int(next.Add(1))%len(users)]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.Run("redis", func(b *testing.B) {
		s.redis = rc
		l := newUserLimit(s, surfaceWrites, "writes", 100_000_000)
		parallel(b, func(ctx context.Context, user string) error { _, err := l.allow(ctx, user); return err })
	})
	b.Run("redis-ping", func(b *testing.B) {
		parallel(b, func(ctx context.Context, _ string) error { return rc.Ping(ctx).Err() })
	})
	b.Run("memory", func(b *testing.B) {
		s.redis = nil
		l := newUserLimit(s, surfaceWrites, "writes", 100_000_000)
		parallel(b, func(ctx context.Context, user string) error { _, err := l.allow(ctx, user); return err })
	})
}

// countCalls is a go-redis hook counting the commands sent to the real Redis.
type countCalls struct{ n *atomic.Int64 }

func (h countCalls) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h countCalls) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}
func (h countCalls) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestRateLimitRedisLeases: with Redis, two replicas writing for one user share one
// budget and never exceed it; each takes its tokens a lease at a time, so a write costs
// a Redis call only every leaseSize writes; the error is bounded: the user is refused
// with at most leaseSize-1 tokens unspent in each replica's lease.
func TestRateLimitRedisLeases(t *testing.T) {
	ctx := context.Background()
	opts, err := redis.ParseURL(redisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opts)
	defer rc.Close()
	var calls atomic.Int64
	rc.AddHook(countCalls{&calls})
	s := &Server{redis: rc, log: storetest.Quiet(), metrics: newMetrics(Config{})}
	const perMinute = 200
	lease := leaseSize(perMinute)
	replicas := []*userLimit{newUserLimit(s, surfaceWrites, "writes", perMinute), newUserLimit(s, surfaceWrites, "writes", perMinute)}
	user := "lease-test-" + rand.Text()
	start := time.Now()
	allowed, refused := 0, [2]bool{}
	for i := 0; !refused[0] || !refused[1]; i++ {
		if i > 4*perMinute {
			t.Fatalf("%d writes allowed and no end: the budget is not shared", allowed)
		}
		if _, err := replicas[i%2].allow(ctx, user); err != nil {
			if store.ErrorCode(err) != store.CodeRateLimited {
				t.Fatal(err)
			}
			refused[i%2] = true
			continue
		}
		if refused[0] || refused[1] {
			continue // the other replica still spends its lease
		}
		allowed++
	}
	refill := int(time.Since(start).Minutes()*perMinute) + 1
	t.Logf("%d writes allowed with %d Redis calls (lease %d)", allowed, calls.Load(), lease)
	if allowed > perMinute+refill {
		t.Fatalf("%d writes allowed, budget %d (+%d refilled meanwhile)", allowed, perMinute, refill)
	}
	if allowed < perMinute-2*(lease-1) {
		t.Fatalf("%d writes allowed before the first refusal, want at least %d", allowed, perMinute-2*(lease-1))
	}
	if n := calls.Load(); n > int64(2*perMinute/lease+8) {
		t.Fatalf("%d Redis calls for about %d writes: not leased", n, 2*perMinute)
	}
}
