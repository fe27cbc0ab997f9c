// Command load is Evo's load tool. It runs against a live cluster (replicas + Redis +
// PostgreSQL on loopback): it opens WebSockets spread over the replicas, makes todo
// changes through the REST API at a fixed rate, and measures, for every todo.* frame a
// socket receives, the time from just before the REST call that caused it. It reports
// connect rate, loss, latency percentiles, deliveries per second, the servers' resident
// memory per socket and the CPU each process used. It also compares the REST API with
// pgbench running the same SQL. Every phase is bounded in time; the tool stops by itself.
//
//	go run ./bench/load -shape all          # the standard shapes, see -help
//	go run ./bench/load -sockets 100 -users 10 -rate 50 -duration 5s
package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

func numCPU() int { return runtime.NumCPU() }

type config struct {
	replicas    []string // host:port of each replica
	pids        []int
	databaseURL string
	dataDir     string
	publicURL   string

	shapes      []string
	sockets     int
	users       int
	rate        float64
	duration    time.Duration
	mode        string
	connectRate float64
	connectConc int
	inflight    int
	drain       time.Duration
	settle      time.Duration
	idle        time.Duration

	steps        []float64
	stepDuration time.Duration

	restConc     int
	restDuration time.Duration
	restUsers    int
	restRate     float64
	pgbench      string
	pgbenchDir   string
	alongside    float64 // pgbench change.sql at this rate during every change window (0: none)

	redisURL    string
	redisPrefix string

	fakeLLM       string
	agentChats    int
	agentTokens   int
	agentInterval time.Duration

	jsonOut string
	timeout time.Duration

	target     string // evo or centrifugo
	centrifugo centrifugo
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

func run() error {
	var c config
	var replicas, pids, shapes, steps string
	flag.StringVar(&replicas, "replicas", "127.0.0.1:8001,127.0.0.1:8002", "comma-separated host:port of the replicas (WebSockets ws://H/ws, REST http://H); sockets and changes go round-robin")
	flag.StringVar(&pids, "pids", "", "comma-separated server pids, one per replica (default: found by port from /proc/net/tcp)")
	flag.StringVar(&c.databaseURL, "database-url", os.Getenv("DATABASE_URL"), "the replicas' DATABASE_URL (users are created there)")
	flag.StringVar(&c.dataDir, "data-dir", cmp.Or(os.Getenv("DATA_DIR"), "./data"), "the replicas' DATA_DIR (the dev signing key)")
	flag.StringVar(&c.publicURL, "public-url", os.Getenv("PUBLIC_URL"), "the replicas' PUBLIC_URL (the dev issuer's iss and aud)")
	flag.StringVar(&shapes, "shape", "custom", "comma-separated: a, b, c, d, e, rest, agent, all (d,a,b,c,e,rest,agent), or custom (the flags below)")
	flag.IntVar(&c.sockets, "sockets", 100, "custom: WebSockets to open (socket i belongs to user i%users)")
	flag.IntVar(&c.users, "users", 100, "custom: users")
	flag.Float64Var(&c.rate, "rate", 100, "custom: todo changes per second (0: idle, memory only)")
	flag.DurationVar(&c.duration, "duration", 10*time.Second, "custom: how long changes are made")
	flag.StringVar(&c.mode, "mode", "mixed", "changes: create (POST), update (PUT of the user's todo) or mixed (alternate per user)")
	flag.Float64Var(&c.connectRate, "connect-rate", 0, "sockets opened per second at most (0: as fast as -connect-conc allows)")
	flag.IntVar(&c.connectConc, "connect-conc", 64, "handshakes in flight at most")
	flag.IntVar(&c.inflight, "inflight", 512, "REST change calls in flight at most (the generator is open loop up to this)")
	flag.DurationVar(&c.drain, "drain", 10*time.Second, "longest wait for the last deliveries after the last change")
	flag.DurationVar(&c.settle, "settle", 3*time.Second, "wait after connecting before memory is read")
	flag.DurationVar(&c.idle, "idle", 10*time.Second, "shape d: how long the sockets stay idle")
	flag.StringVar(&steps, "steps", "250,500,750,1000,1250,1500,2000,2500,3000,3500,4000,5000,6000", "shape e: change rates tried in order")
	flag.DurationVar(&c.stepDuration, "step-duration", 10*time.Second, "shape e: duration of each step")
	flag.IntVar(&c.restConc, "rest-conc", 32, "rest: concurrency of Evo and of pgbench")
	flag.DurationVar(&c.restDuration, "rest-duration", 10*time.Second, "rest: duration of each phase")
	flag.IntVar(&c.restUsers, "rest-users", 100, "rest: users (each with 25 todos before the run)")
	flag.Float64Var(&c.restRate, "rest-rate", 300, "rest: also compare a create at this fixed rate with pgbench -R of change.sql, p50 to p50 (0: don't)")
	flag.StringVar(&c.pgbench, "pgbench", "pgbench", "pgbench binary")
	flag.StringVar(&c.pgbenchDir, "pgbench-dir", "bench/pgbench", "directory of list.sql and change.sql")
	flag.Float64Var(&c.alongside, "pgbench-alongside", 0, "run pgbench change.sql at this rate (-R) on -database-url during every change window and report its statements' p50 and p99 (for -target centrifugo: what a durable PostgreSQL commit per change costs on the same machine; the database is migrated and given the -rest-users users)")
	flag.StringVar(&c.redisURL, "redis-url", cmp.Or(os.Getenv("REDIS_URL"), "redis://127.0.0.1:6379/0"), "the replicas' REDIS_URL: the tool also subscribes to its users' channels to count publications Redis delivers out of seq order (empty: don't)")
	flag.StringVar(&c.redisPrefix, "redis-prefix", "evo:", "the replicas' Redis channel prefix")
	flag.StringVar(&c.fakeLLM, "fake-llm", "", "shape agent: serve a fake OpenAI-compatible model on this host:port (the replicas' LLM_BASE_URL is http://<it>/v1)")
	flag.IntVar(&c.agentChats, "agent-chats", 20, "shape agent: chats, one after the other")
	flag.IntVar(&c.agentTokens, "agent-tokens", 50, "shape agent: tokens per chat")
	flag.DurationVar(&c.agentInterval, "agent-interval", 5*time.Millisecond, "shape agent: time between two tokens of the fake model")
	flag.StringVar(&c.jsonOut, "json", "", "also write the results as JSON to this file")
	flag.DurationVar(&c.timeout, "timeout", 30*time.Minute, "stop everything after this long")
	flag.StringVar(&c.target, "target", "evo", "the server: evo, or centrifugo (shapes a, b, c, d and custom; see bench/centrifugo.sh)")
	var cfSecret string
	flag.StringVar(&cfSecret, "centrifugo-secret", "", "-target centrifugo: the HMAC key of connection tokens (client.token.hmac_secret_key)")
	flag.StringVar(&c.centrifugo.apiKey, "centrifugo-api-key", "", "-target centrifugo: the HTTP API key (http_api.key)")
	flag.Parse()
	c.centrifugo.secret = []byte(cfSecret)

	c.replicas = strings.Split(replicas, ",")
	for _, p := range splitNonEmpty(pids) {
		n, err := strconv.Atoi(p)
		if err != nil {
			return fmt.Errorf("-pids: %w", err)
		}
		c.pids = append(c.pids, n)
	}
	for _, s := range splitNonEmpty(steps) {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("-steps: %w", err)
		}
		c.steps = append(c.steps, f)
	}
	for _, s := range splitNonEmpty(shapes) {
		if s == "all" {
			// d first: on freshly started replicas its memory reading is not blurred by
			// what earlier shapes left in the heap.
			c.shapes = append(c.shapes, "d", "a", "b", "c", "e", "rest", "agent")
			continue
		}
		if !slices.Contains([]string{"a", "b", "c", "d", "e", "rest", "agent", "custom"}, s) {
			return fmt.Errorf("-shape: unknown shape %q", s)
		}
		c.shapes = append(c.shapes, s)
	}
	evo := c.target == "evo"
	switch {
	case c.target != "evo" && c.target != "centrifugo":
		return fmt.Errorf("-target: %q is not evo or centrifugo", c.target)
	case !evo && (cfSecret == "" || c.centrifugo.apiKey == ""):
		return errors.New("-target centrifugo needs -centrifugo-secret and -centrifugo-api-key")
	case !evo && slices.ContainsFunc(c.shapes, func(s string) bool { return !slices.Contains([]string{"a", "b", "c", "d", "custom"}, s) }):
		return errors.New("-target centrifugo: only shapes a, b, c, d and custom")
	case c.alongside > 0 && c.databaseURL == "":
		return errors.New("-pgbench-alongside needs -database-url")
	case evo && c.databaseURL == "":
		return errors.New("-database-url (or DATABASE_URL) is required: users are created there")
	case evo && c.publicURL == "":
		return errors.New("-public-url (or PUBLIC_URL) is required: the replicas' dev issuer URL")
	case c.pids != nil && len(c.pids) != len(c.replicas):
		return errors.New("-pids: one pid per replica")
	case !slices.Contains([]string{"create", "update", "mixed"}, c.mode):
		return fmt.Errorf("-mode: %q is not create, update or mixed", c.mode)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	r, err := newRunner(ctx, c)
	if err != nil {
		return err
	}
	defer r.Close()
	for _, s := range c.shapes {
		if ctx.Err() != nil {
			break
		}
		if err := r.shape(ctx, s); err != nil {
			r.note("shape %s: %v", s, err)
		}
	}
	r.report(os.Stdout)
	if c.jsonOut != "" {
		data, _ := json.MarshalIndent(r.out, "", "  ")
		if err := os.WriteFile(c.jsonOut, data, 0o644); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func splitNonEmpty(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// runner holds what the shapes share: the setup, the HTTP client, the server pids and
// the CPU tracker, and collects the results.
type runner struct {
	c       config
	setup   *setup
	wsURL   []string
	httpURL []string
	pids    []int
	cpu     *cpuTracker
	llm     *fakeLLM    // nil without -fake-llm
	cf      *centrifugo // nil: the target is Evo (then setup is set)
	out     output
}

// output is the report, also written as JSON.
type output struct {
	Started  time.Time
	Machine  string
	Command  string
	Nofile   string // the tool's RLIMIT_NOFILE after raising it
	Servers  []serverInfo
	Shapes   []result
	REST     []restResult
	RESTNote string
	Agent    *agentResult
	Notes    []string
}

type serverInfo struct {
	Replica string
	PID     int
	Nofile  string
}

// result is one measurement window of a change or idle shape.
type result struct {
	Shape        string
	Sockets      int
	Users        int
	Rate         float64 // target changes/s
	Made         float64 // changes/s achieved
	Duration     time.Duration
	ConnectRate  float64 // sockets/s, 0 when the sockets were reused
	ConnectFail  int
	Changes      int64
	ChangeErrors int64
	Expected     int64
	Received     int64
	Loss         int64
	Dups, Gaps   int64
	Unmatched    int64
	Closed       int64
	Published    int64 // publications the Redis observer saw
	PubGaps      int64 // ... that skipped a seq (the missing one came later)
	PubLateP50   time.Duration
	PubLateP99   time.Duration // how long after a gap the missing seq arrived
	PubLateMax   time.Duration
	DeliveriesPS float64
	P50, P90     time.Duration
	P99, Max     time.Duration
	RESTP50      time.Duration
	RESTP99      time.Duration
	RSSKBPerSock float64 // (RSS after connect - before) / sockets, all replicas
	RSSPerServer []string
	CPU          cpuUse
	Alongside    *restResult // -pgbench-alongside: pgbench's change.sql during the window
	Target       string
	Met          bool
	Notes        []string
}

func newRunner(ctx context.Context, c config) (*runner, error) {
	r := &runner{c: c}
	r.out.Started = time.Now().UTC()
	r.out.Machine = machine()
	r.out.Command = strings.Join(os.Args, " ")
	nofile, err := raiseNofile()
	if err != nil {
		return nil, fmt.Errorf("raise RLIMIT_NOFILE: %w", err)
	}
	r.out.Nofile = strconv.FormatUint(nofile, 10)
	if c.target == "centrifugo" {
		r.cf = &c.centrifugo
	}
	groups := cpuGroups{servers: map[int]string{}, self: os.Getpid()}
	for i, hp := range c.replicas {
		if r.cf != nil {
			r.wsURL = append(r.wsURL, r.cf.wsURL(hp))
		} else {
			r.wsURL = append(r.wsURL, "ws://"+hp+"/ws")
		}
		r.httpURL = append(r.httpURL, "http://"+hp)
		pid := 0
		if c.pids != nil {
			pid = c.pids[i]
		} else {
			u, err := url.Parse("http://" + hp)
			if err != nil {
				return nil, fmt.Errorf("-replicas %s: %w", hp, err)
			}
			port, _ := strconv.Atoi(u.Port())
			if pid, err = pidByPort(port); err != nil {
				return nil, fmt.Errorf("-replicas %s: %w (pass -pids)", hp, err)
			}
		}
		r.pids = append(r.pids, pid)
		groups.servers[pid] = r.serverName(i)
		r.out.Servers = append(r.out.Servers, serverInfo{Replica: hp, PID: pid, Nofile: nofileLimit(pid)})
	}
	r.cpu = newCPUTracker(groups)
	if r.cf != nil {
		if c.alongside > 0 {
			if err := pgbenchUsers(ctx, c.databaseURL, c.restUsers); err != nil {
				r.cpu.Close()
				return nil, err
			}
		}
		return r, nil
	}
	if r.setup, err = newSetup(ctx, c.databaseURL, c.dataDir, c.publicURL); err != nil {
		r.cpu.Close()
		return nil, err
	}
	if c.fakeLLM != "" {
		if r.llm, err = startFakeLLM(c.fakeLLM, c.agentTokens, c.agentInterval, c.agentChats*c.agentTokens*2+1000); err != nil {
			r.Close()
			return nil, err
		}
	}
	if c.alongside > 0 { // the users pgbench's change.sql names (no tokens needed)
		if err := insertRESTUsers(ctx, r.setup.db, c.restUsers); err != nil {
			r.Close()
			return nil, err
		}
	}
	return r, nil
}

// serverName names replica i in the report: evo1, evo2, or centrifugo1, ...
func (r *runner) serverName(i int) string {
	if r.cf != nil {
		return fmt.Sprintf("centrifugo%d", i+1)
	}
	return fmt.Sprintf("evo%d", i+1)
}

func (r *runner) Close() {
	r.cpu.Close()
	if r.setup != nil {
		r.setup.Close()
	}
	if r.llm != nil {
		r.llm.Close()
	}
}

func (r *runner) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintln(os.Stderr, "load:", msg)
	r.out.Notes = append(r.out.Notes, msg)
}

func (r *runner) progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// shape runs one standard shape.
func (r *runner) shape(ctx context.Context, s string) error {
	c := r.c
	switch s {
	case "a":
		return r.changeShape(ctx, "a", 1000, 1000, []float64{1000}, 20*time.Second, false,
			func(x *result) (bool, string) { return x.Loss == 0 && x.P99 < 8*time.Millisecond, "loss 0, p99 < 8 ms" })
	case "b":
		return r.changeShape(ctx, "b", 10000, 10000, []float64{1000}, 20*time.Second, false,
			func(x *result) (bool, string) {
				return x.Loss == 0 && x.P99 < 50*time.Millisecond, "loss 0, p99 < 50 ms"
			})
	case "c":
		return r.changeShape(ctx, "c", 1000, 1, []float64{100}, 20*time.Second, false,
			func(x *result) (bool, string) {
				return x.Loss == 0 && x.DeliveriesPS >= 99000 && x.P99 < 100*time.Millisecond, "loss 0, ≥ 99,000 deliveries/s, p99 < 100 ms"
			})
	case "d":
		return r.idleShape(ctx, "d", 10000, 10000)
	case "e":
		return r.stepShape(ctx)
	case "rest":
		return r.restShape(ctx)
	case "agent":
		return r.agentShape(ctx)
	case "custom":
		if c.rate <= 0 {
			return r.idleShape(ctx, "custom", c.sockets, c.users)
		}
		return r.changeShape(ctx, "custom", c.sockets, c.users, []float64{c.rate}, c.duration, false, nil)
	}
	return fmt.Errorf("unknown shape %q", s)
}

// connected is a fleet of open sockets and what connecting them measured.
type connected struct {
	f          *fleet
	obs        *observer // nil without -redis-url
	users      []benchUser
	ok         int
	rate       float64
	rssPerSock float64
	rssServers []string
}

// open creates the users and opens the sockets, reading the servers' RSS before and
// after (after -settle).
func (r *runner) open(ctx context.Context, name string, n, u int) (*connected, error) {
	r.progress("shape %s: %d users", name, u)
	var users []benchUser
	var err error
	if r.cf != nil {
		users, err = r.cf.users("bench", u, 2*time.Hour)
	} else {
		users, err = r.setup.users(ctx, "bench", u, 2*time.Hour)
	}
	if err != nil {
		return nil, err
	}
	before := r.rss()
	f := newFleet(u, len(r.wsURL), r.cf)
	r.progress("shape %s: opening %d sockets", name, n)
	ok, took := f.connect(ctx, r.wsURL, users, n, r.c.connectConc, r.c.connectRate)
	cn := &connected{f: f, users: users, ok: ok, rate: float64(ok) / took.Seconds()}
	r.progress("shape %s: %d sockets open in %v (%.0f/s)", name, ok, took.Round(time.Millisecond), cn.rate)
	if ok < n {
		r.note("shape %s: %d of %d sockets failed to connect: %s", name, n-ok, n, f.errorSummary())
	}
	if r.c.redisURL != "" && r.cf == nil {
		if cn.obs, err = observeRedis(ctx, r.c.redisURL, r.c.redisPrefix, users); err != nil {
			r.note("shape %s: %v", name, err)
		}
	}
	sleepCtx(ctx, r.c.settle)
	after := r.rss()
	var delta int64
	for i := range r.pids {
		delta += after[i] - before[i]
		per := 0.0
		if f.perServer[i] > 0 {
			per = float64(after[i]-before[i]) / float64(f.perServer[i])
		}
		cn.rssServers = append(cn.rssServers, fmt.Sprintf("%s: %d sockets, RSS %.1f -> %.1f MiB (%.1f KB/socket)",
			r.serverName(i), f.perServer[i], float64(before[i])/1024, float64(after[i])/1024, per))
	}
	if ok > 0 {
		cn.rssPerSock = float64(delta) / float64(ok)
	}
	return cn, nil
}

func (cn *connected) close() {
	if cn.obs != nil {
		cn.obs.Close()
	}
	cn.f.close()
}

// rss returns VmRSS (KiB) of each server.
func (r *runner) rss() []int64 {
	out := make([]int64, len(r.pids))
	for i, pid := range r.pids {
		v, err := rssKB(pid)
		if err != nil {
			r.note("read RSS of pid %d: %v", pid, err)
		}
		out[i] = v
	}
	return out
}

// changeShape opens n sockets for u users and makes changes at each rate in turn for dur.
// With stopOnFail (shape e) it stops at the first rate that misses check.
func (r *runner) changeShape(ctx context.Context, name string, n, u int, rates []float64, dur time.Duration, stopOnFail bool, check func(*result) (bool, string)) error {
	cn, err := r.open(ctx, name, n, u)
	if err != nil {
		return err
	}
	defer cn.close()
	if cn.ok == 0 {
		return errors.New("no socket connected")
	}
	ch := newChanger(newRESTClient(r.httpURL, r.c.inflight), cn.users, r.c.mode, r.cf)
	for i, rate := range rates {
		if ctx.Err() != nil {
			break
		}
		x := r.window(ctx, name, cn, ch, rate, dur)
		if i == 0 {
			x.ConnectRate = cn.rate
			x.ConnectFail = n - cn.ok
			x.RSSKBPerSock = cn.rssPerSock
			x.RSSPerServer = cn.rssServers
		}
		if check != nil {
			x.Met, x.Target = check(x)
		}
		r.out.Shapes = append(r.out.Shapes, *x)
		r.progress("shape %s at %.0f/s: loss %d, p50 %v p99 %v, %.0f deliveries/s, CPU %s", name, rate, x.Loss, x.P50, x.P99, x.DeliveriesPS, x.CPU)
		if stopOnFail && !x.Met {
			break
		}
	}
	return nil
}

// window makes changes at rate for dur on the open sockets, drains, and measures.
func (r *runner) window(ctx context.Context, name string, cn *connected, ch *changer, rate float64, dur time.Duration) *result {
	tag := strings.ToLower(rand.Text()[:6])
	total := int(rate*dur.Seconds()) + 1
	m := newMeasure(tag, total)
	cn.f.cur.Store(m)
	closedBefore := cn.f.closed.Load()
	if cn.obs != nil {
		cn.obs.reset()
	}
	r.progress("shape %s: %.0f changes/s for %v", name, rate, dur)
	m0 := r.scrape(ctx)
	c0 := r.cpu.sample()
	var pg chan restResult
	if r.c.alongside > 0 {
		pg = make(chan restResult, 1)
		go func() {
			res, err := pgbenchRate(ctx, r.c.pgbench, r.c.databaseURL, filepath.Join(r.c.pgbenchDir, "change.sql"), r.c.alongside, 8, r.c.restUsers, dur)
			if err != nil {
				res.FirstErr = err.Error()
			}
			pg <- res
		}()
	}
	st := ch.run(ctx, m, rate, dur, r.c.inflight, cn.f.perUser)
	deadline := time.Now().Add(r.c.drain)
	for m.received.Load() < st.expected && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	var alongside *restResult // waited for before the CPU sample: its CPU counts
	if pg != nil {
		res := <-pg
		alongside = &res
	}
	c1 := r.cpu.sample()
	m1 := r.scrape(ctx)
	x := &result{
		Shape: name, Sockets: cn.ok, Users: len(cn.users), Rate: rate, Duration: dur,
		Changes: st.made, ChangeErrors: st.errors, Expected: st.expected,
		Received: m.received.Load(), Dups: m.dups.Load(), Gaps: m.gaps.Load(), Unmatched: m.unmatched.Load(),
		Closed: cn.f.closed.Load() - closedBefore,
		P50:    m.lat.Quantile(0.50), P90: m.lat.Quantile(0.90), P99: m.lat.Quantile(0.99), Max: m.lat.Max(),
		RESTP50: st.rest.Quantile(0.5), RESTP99: st.rest.Quantile(0.99),
		CPU: usage(c0, c1),
	}
	if cn.obs != nil {
		x.Published, x.PubGaps = cn.obs.msgs.Load(), cn.obs.gaps.Load()
		x.PubLateP50, x.PubLateP99, x.PubLateMax = cn.obs.late.Quantile(0.5), cn.obs.late.Quantile(0.99), cn.obs.late.Max()
		if x.PubGaps > 0 {
			x.Notes = append(x.Notes, fmt.Sprintf("Redis delivered %d of %d publications after a later seq of the same user (%.1f%%): each replica holds such a publication until the missing one comes (events held, below)",
				x.PubGaps, x.Published, 100*float64(x.PubGaps)/float64(x.Published)))
		}
	}
	x.Alongside = alongside
	if res := alongside; res != nil {
		if res.FirstErr != "" {
			x.Notes = append(x.Notes, "pgbench alongside: "+res.FirstErr)
		} else {
			note := fmt.Sprintf("pgbench change.sql alongside at %.0f/s (%.0f tps): statement p50 %v, p99 %v", r.c.alongside, res.TPS, res.P50, res.P99)
			if r.cf != nil && res.lat != nil {
				// What a server would see that made pgbench's statement, then delivered as
				// this one did, at no other cost: the floor of a durable change here.
				note += fmt.Sprintf("; statement then delivery (convolved): p50 %v, p99 %v",
					res.lat.SumQuantile(&m.lat, 0.5), res.lat.SumQuantile(&m.lat, 0.99))
			}
			x.Notes = append(x.Notes, note)
		}
	}
	if note := metricsNote(m0, m1); note != "" {
		x.Notes = append(x.Notes, note)
	}
	x.Made = float64(st.made+st.errors) / st.took.Seconds()
	x.Loss = max(0, x.Expected-x.Received)
	// Deliveries per second: from the first change to the last delivery (the drain
	// counts: a server that falls behind delivers over a longer time).
	if span := time.Duration(m.last.Load() - st.start); span > 0 {
		x.DeliveriesPS = float64(x.Received) / max(span, st.took).Seconds()
	}
	if st.errors > 0 {
		x.Notes = append(x.Notes, fmt.Sprintf("%d change errors, first: %s", st.errors, st.firstErr))
	}
	if x.Closed > 0 {
		x.Notes = append(x.Notes, fmt.Sprintf("%d sockets closed during the window: %s", x.Closed, cn.f.errorSummary()))
	}
	if x.Made < 0.95*rate {
		x.Notes = append(x.Notes, fmt.Sprintf("only %.0f of %.0f changes/s were made (REST p99 %v, -inflight %d)", x.Made, rate, x.RESTP99, r.c.inflight))
	}
	return x
}

// idleShape opens n sockets and leaves them idle: memory per socket, connect rate, and
// the CPU idle sockets cost.
func (r *runner) idleShape(ctx context.Context, name string, n, u int) error {
	cn, err := r.open(ctx, name, n, u)
	if err != nil {
		return err
	}
	defer cn.close()
	c0 := r.cpu.sample()
	r.progress("shape %s: idle for %v", name, r.c.idle)
	sleepCtx(ctx, r.c.idle)
	c1 := r.cpu.sample()
	x := result{Shape: name, Sockets: cn.ok, Users: u, ConnectRate: cn.rate, ConnectFail: n - cn.ok,
		RSSKBPerSock: cn.rssPerSock, RSSPerServer: cn.rssServers, CPU: usage(c0, c1), Duration: r.c.idle,
		Closed: cn.f.closed.Load(), Target: "≤ 40 KB/socket"}
	x.Met = x.RSSKBPerSock <= 40 && x.ConnectFail == 0 && x.Closed == 0
	r.out.Shapes = append(r.out.Shapes, x)
	r.progress("shape %s: %.1f KB/socket; %s", name, x.RSSKBPerSock, strings.Join(cn.rssServers, "; "))
	return nil
}

// stepShape is shape e: 1,000 sockets of 1,000 users, change rates stepped up until loss
// or p99 >= 100 ms, compared with pgbench's change rate measured just before.
func (r *runner) stepShape(ctx context.Context) error {
	if _, err := r.setup.restUsers(ctx, r.c.restUsers, time.Hour); err != nil {
		return err
	}
	pg, err := r.pgbenchPhase(ctx, "change.sql")
	if err != nil {
		r.note("shape e: %v", err)
	}
	first := len(r.out.Shapes)
	err = r.changeShape(ctx, "e", 1000, 1000, r.c.steps, r.c.stepDuration, true,
		func(x *result) (bool, string) {
			return x.Loss == 0 && x.P99 < 100*time.Millisecond && x.Made >= 0.95*x.Rate, "loss 0, p99 < 100 ms"
		})
	best := 0.0
	for _, x := range r.out.Shapes[first:] {
		if x.Met {
			best = max(best, x.Rate)
		}
	}
	line := fmt.Sprintf("shape e: highest change rate with loss 0 and p99 < 100 ms: %.0f/s", best)
	if pg.TPS > 0 {
		line += fmt.Sprintf("; pgbench change.sql at %d clients just before: %.0f tps; ratio %.2f (target ≥ 1.0, issue 16)", pg.Conc, pg.TPS, best/pg.TPS)
	}
	r.note("%s", line)
	return err
}

// restShape compares the REST API with pgbench running the same SQL, side by side: list
// then change, pgbench first each time.
func (r *runner) restShape(ctx context.Context) error {
	users, err := r.setup.restUsers(ctx, r.c.restUsers, time.Hour)
	if err != nil {
		return err
	}
	if err := r.setup.seedTodos(ctx, users, 25); err != nil {
		return err
	}
	client := newRESTClient(r.httpURL, r.c.restConc)
	var notes []string
	for _, kind := range []string{"list", "change"} {
		pg, err := r.pgbenchPhase(ctx, kind+".sql")
		if err != nil {
			r.note("rest: %v", err)
		}
		evoKind := map[string]string{"list": "list", "change": "create"}[kind]
		r.progress("rest: Evo %s, %d workers for %v", evoKind, r.c.restConc, r.c.restDuration)
		c0 := r.cpu.sample()
		ev := restLoad(ctx, client, users, evoKind, r.c.restConc, r.c.restDuration)
		ev.CPU = usage(c0, r.cpu.sample())
		if ev.Errors > 0 {
			r.note("rest: Evo %s: %d errors, first: %s", evoKind, ev.Errors, ev.FirstErr)
		}
		r.out.REST = append(r.out.REST, ev)
		r.progress("rest: Evo %s %.0f/s p50 %v p99 %v; CPU %s", evoKind, ev.TPS, ev.P50, ev.P99, ev.CPU)
		if pg.TPS > 0 {
			target := map[string]string{"list": " (target ≥ 0.8)"}[kind]
			notes = append(notes, fmt.Sprintf("%s: Evo %.0f/s ÷ pgbench %.0f tps = %.2f%s", kind, ev.TPS, pg.TPS, ev.TPS/pg.TPS, target))
		}
	}
	if rate := r.c.restRate; rate > 0 {
		// The same change at a fixed rate: REST call vs the statement alone, p50 to p50.
		r.progress("rest: pgbench change.sql at %.0f/s for %v", rate, r.c.restDuration)
		c0 := r.cpu.sample()
		// 8 clients: at a few hundred a second about one statement is in flight; more
		// clients only add pgbench's own scheduling delays (64: p50 several times higher).
		pg, err := pgbenchRate(ctx, r.c.pgbench, r.c.databaseURL, filepath.Join(r.c.pgbenchDir, "change.sql"), rate, 8, r.c.restUsers, r.c.restDuration)
		pg.CPU = usage(c0, r.cpu.sample())
		if err != nil {
			r.note("rest: %v", err)
		} else {
			r.out.REST = append(r.out.REST, pg)
		}
		// The create, then GET /health (no auth, no database: the HTTP round trip
		// alone, which pgbench does not make) at the same rate.
		var ev, health restResult
		for _, ph := range []struct {
			name, method, path string
			body               []byte
			res                *restResult
		}{
			{"create", "POST", "/api/todos", []byte(`{"title":"made by the REST benchmark","description":"made by the load tool"}`), &ev},
			{"GET /health", "GET", "/health", nil, &health},
		} {
			r.progress("rest: Evo %s at %.0f/s for %v", ph.name, rate, r.c.restDuration)
			c0 = r.cpu.sample()
			res := restRateLoad(ctx, client, users, ph.name, ph.method, ph.path, ph.body, rate, r.c.inflight, r.c.restDuration)
			res.CPU = usage(c0, r.cpu.sample())
			if res.Errors > 0 {
				r.note("rest: Evo %s at %.0f/s: %d errors, first: %s", ph.name, rate, res.Errors, res.FirstErr)
			}
			r.out.REST = append(r.out.REST, res)
			r.progress("rest: Evo %s at %.0f/s: p50 %v p99 %v; CPU %s", ph.name, rate, res.P50, res.P99, res.CPU)
			*ph.res = res
		}
		if err == nil && pg.P50 > 0 {
			notes = append(notes, fmt.Sprintf("create at %.0f/s: Evo p50 %s ÷ pgbench p50 %s = %.2f (target ≤ 1.3); "+
				"the HTTP round trip alone (GET /health) p50 %s, so Evo's create minus it: %s = %.2f × pgbench",
				rate, ms(ev.P50), ms(pg.P50), float64(ev.P50)/float64(pg.P50),
				ms(health.P50), ms(ev.P50-health.P50), float64(ev.P50-health.P50)/float64(pg.P50)))
		}
	}
	r.out.RESTNote = strings.Join(notes, "; ")
	return nil
}

// pgbenchPhase runs a pgbench script of -pgbench-dir at -rest-conc for -rest-duration,
// sampling CPU, and records it.
func (r *runner) pgbenchPhase(ctx context.Context, script string) (restResult, error) {
	path := filepath.Join(r.c.pgbenchDir, script)
	r.progress("pgbench %s, %d clients for %v", path, r.c.restConc, r.c.restDuration)
	c0 := r.cpu.sample()
	res, err := pgbench(ctx, r.c.pgbench, r.c.databaseURL, path, r.c.restConc, r.c.restUsers, r.c.restDuration)
	res.CPU = usage(c0, r.cpu.sample())
	if err != nil {
		return res, err
	}
	r.out.REST = append(r.out.REST, res)
	r.progress("pgbench %s: %.0f tps; CPU %s", script, res.TPS, res.CPU)
	return res, nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// report prints the results tables.
func (r *runner) report(w *os.File) {
	o := &r.out
	fmt.Fprintf(w, "\n## Load results (target %s), %s\n\n", r.c.target, o.Started.Format(time.RFC3339))
	fmt.Fprintf(w, "machine: %s\n", o.Machine)
	fmt.Fprintf(w, "command: %s\n", o.Command)
	fmt.Fprintf(w, "load tool RLIMIT_NOFILE %s;", o.Nofile)
	for _, s := range o.Servers {
		fmt.Fprintf(w, " server %s pid %d RLIMIT_NOFILE %s;", s.Replica, s.PID, s.Nofile)
	}
	fmt.Fprintln(w)
	if len(o.Shapes) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.Debug)
		fmt.Fprintln(tw, "shape\tsockets\tusers\tchanges/s (made)\tconnect/s\texpected\treceived\tloss\tdeliveries/s\tp50\tp90\tp99\tmax\tREST p99\tserver KB/socket\ttarget\tmet")
		for _, x := range o.Shapes {
			rate, conn, kb := "idle", "", ""
			if x.Rate > 0 {
				rate = fmt.Sprintf("%.0f (%.0f)", x.Rate, x.Made)
			}
			if x.ConnectRate > 0 {
				conn = fmt.Sprintf("%.0f", x.ConnectRate)
			}
			if x.RSSKBPerSock > 0 { // a replica's heap shrinking after an earlier shape reads negative
				kb = fmt.Sprintf("%.1f", x.RSSKBPerSock)
			}
			met := "no"
			if x.Met {
				met = "yes"
			}
			if x.Target == "" {
				met = ""
			}
			lat := func(d time.Duration) string {
				if x.Rate == 0 {
					return ""
				}
				return ms(d)
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%d\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
				x.Shape, x.Sockets, x.Users, rate, conn, x.Expected, x.Received, x.Loss, x.DeliveriesPS,
				lat(x.P50), lat(x.P90), lat(x.P99), lat(x.Max), lat(x.RESTP99), kb, x.Target, met)
		}
		tw.Flush()
		fmt.Fprintln(w, "\nCPU during each window, in cores (2 = both CPUs busy):")
		for _, x := range o.Shapes {
			rate := "idle"
			if x.Rate > 0 {
				rate = fmt.Sprintf("%.0f/s", x.Rate)
			}
			fmt.Fprintf(w, "  %s %s: %s\n", x.Shape, rate, x.CPU)
			for _, s := range x.RSSPerServer {
				fmt.Fprintf(w, "    %s\n", s)
			}
			for _, n := range x.Notes {
				fmt.Fprintf(w, "    note: %s\n", n)
			}
			if x.Published > 0 {
				fmt.Fprintf(w, "    Redis: %d publications, %d delivered after a later seq of their user", x.Published, x.PubGaps)
				if x.PubGaps > 0 {
					fmt.Fprintf(w, " (the missing one came p50 %s, p99 %s, max %s later)", ms(x.PubLateP50), ms(x.PubLateP99), ms(x.PubLateMax))
				}
				fmt.Fprintln(w)
			}
			if x.Dups+x.Gaps+x.Unmatched > 0 {
				fmt.Fprintf(w, "    frames: %d duplicates, %d after a seq gap, %d unmatched\n", x.Dups, x.Gaps, x.Unmatched)
			}
		}
	}
	if len(o.REST) > 0 {
		fmt.Fprintf(w, "\nREST vs pgbench (same SQL, same concurrency, side by side):\n\n")
		tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.Debug)
		fmt.Fprintln(tw, "phase\tconcurrency\trequests/s (tps)\tp50 (pgbench: mean; at a fixed rate: p50)\tp99\terrors\tCPU (cores)")
		for _, x := range o.REST {
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%s\t%d\t%s\n", x.Name, x.Conc, x.TPS, ms(x.P50), ms(x.P99), x.Errors, x.CPU)
		}
		tw.Flush()
		if o.RESTNote != "" {
			fmt.Fprintf(w, "\n%s\n", o.RESTNote)
		}
	}
	if a := o.Agent; a != nil {
		fmt.Fprintf(w, "\nAgent streaming: %d chats, %d tokens from the fake model (one every %v), chat run on the first replica; token written by the model -> chat.token frame read:\n\n", a.Chats, a.Tokens, a.Interval)
		tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.Debug)
		fmt.Fprintln(tw, "socket\ttokens received\tp50\tp90\tp99\tmax\ttarget\tmet")
		for i, s := range a.Sockets {
			target := 1 * time.Millisecond
			if i > 0 {
				target = 2 * time.Millisecond
			}
			met := "no"
			if s.P99 < target && s.Received == a.Tokens {
				met = "yes"
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\tp99 < %v\t%s\n", s.Where, s.Received, ms(s.P50), ms(s.P90), ms(s.P99), ms(s.Max), target, met)
		}
		tw.Flush()
		fmt.Fprintf(w, "CPU: %s\n", a.CPU)
		for _, n := range a.Notes {
			fmt.Fprintf(w, "note: %s\n", n)
		}
	}
	if len(o.Notes) > 0 {
		fmt.Fprintln(w, "\nnotes:")
		for _, n := range o.Notes {
			fmt.Fprintf(w, "  - %s\n", n)
		}
	}
}

func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64) + " ms"
}
