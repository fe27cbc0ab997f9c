package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// restResult is one closed-loop REST or pgbench phase.
type restResult struct {
	Name     string
	Conc     int
	TPS      float64
	Requests int64
	Errors   int64
	FirstErr string
	P50, P99 time.Duration
	CPU      cpuUse
	lat      *hist // pgbenchRate: the statements' latencies
}

// callTimeout bounds each REST call of the tool.
const callTimeout = 30 * time.Second

// restClient makes the tool's REST calls with fasthttp, which takes less of the CPU the
// tool shares with the servers than net/http: one HostClient per replica, with at most
// conns connections each.
type restClient struct {
	httpURL []string
	hosts   []*fasthttp.HostClient
}

func newRESTClient(httpURL []string, conns int) *restClient {
	c := &restClient{httpURL: httpURL}
	for _, u := range httpURL {
		c.hosts = append(c.hosts, &fasthttp.HostClient{
			Addr:     strings.TrimPrefix(u, "http://"),
			MaxConns: conns,
			// Retry only GETs, as net/http does (when a kept-alive connection was closed).
			RetryIfErr: func(req *fasthttp.Request, _ int, _ error) (bool, bool) { return false, req.Header.IsGet() },
		})
	}
	return c
}

// request sets req to method path on replica as the user of token, with body as JSON
// unless it is nil.
func (c *restClient) request(req *fasthttp.Request, replica int, method, path, token string, body []byte) {
	req.Header.SetMethod(method)
	req.SetRequestURI(c.httpURL[replica] + path)
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.SetContentType("application/json")
		req.SetBody(body)
	}
}

// do sends req to replica and reads the whole response into resp.
func (c *restClient) do(replica int, req *fasthttp.Request, resp *fasthttp.Response) error {
	if err := c.hosts[replica].DoTimeout(req, resp, callTimeout); err != nil {
		return fmt.Errorf("%s %s: %w", req.Header.Method(), req.URI().FullURI(), err)
	}
	return nil
}

// status is an HTTP status as net/http writes it, e.g. "201 Created".
func status(code int) string {
	return strconv.Itoa(code) + " " + fasthttp.StatusMessage(code)
}

// restTally counts a REST phase's calls: the latency of each that succeeded (a 2xx),
// the errors, and the first of them.
type restTally struct {
	lat      hist
	n, errs  atomic.Int64
	once     sync.Once
	firstErr string
}

// call sends req to replica and counts it, timed from just before it is sent.
func (t *restTally) call(client *restClient, replica int, req *fasthttp.Request, resp *fasthttp.Response) {
	t0 := time.Now()
	err := client.do(replica, req, resp)
	if err == nil && resp.StatusCode() >= 300 {
		err = fmt.Errorf("%s %s: %s", req.Header.Method(), req.URI().Path(), status(resp.StatusCode()))
	}
	if err != nil {
		t.errs.Add(1)
		t.once.Do(func() { t.firstErr = err.Error() })
		return
	}
	t.lat.Record(time.Since(t0))
	t.n.Add(1)
}

// result is res with the counts of the phase that began at start (once its calls are done).
func (t *restTally) result(res restResult, start time.Time) restResult {
	res.Requests, res.Errors, res.FirstErr = t.n.Load(), t.errs.Load(), t.firstErr
	res.TPS = float64(res.Requests) / time.Since(start).Seconds()
	res.P50, res.P99 = t.lat.Quantile(0.50), t.lat.Quantile(0.99)
	return res
}

// restLoad runs conc workers for dur, each sending one request after the other to replica
// w%len(client.hosts) as a random user: kind "list" is GET /api/todos?limit=20, "create"
// is POST /api/todos.
func restLoad(ctx context.Context, client *restClient, users []benchUser, kind string, conc int, dur time.Duration) restResult {
	var tally restTally
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range conc {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			replica := w % len(client.hosts)
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer func() { fasthttp.ReleaseRequest(req); fasthttp.ReleaseResponse(resp) }()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				u := users[rng.IntN(len(users))]
				if kind == "list" {
					client.request(req, replica, fasthttp.MethodGet, "/api/todos?limit=20", u.Token, nil)
				} else {
					client.request(req, replica, fasthttp.MethodPost, "/api/todos", u.Token,
						[]byte(`{"title":"made by the REST benchmark","description":"made by the load tool"}`))
				}
				tally.call(client, replica, req, resp)
			}
		})
	}
	wg.Wait()
	return tally.result(restResult{Name: "evo " + kind, Conc: conc}, start)
}

var tpsRE = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
var pgLatRE = regexp.MustCompile(`latency average = ([0-9.]+) ms`)

// pgbench runs script with conc clients for dur against databaseURL and returns its tps.
// The scripts name the REST users through :nusers.
func pgbench(ctx context.Context, bin, databaseURL, script string, conc, nusers int, dur time.Duration) (restResult, error) {
	res := restResult{Name: "pgbench " + script, Conc: conc}
	args := []string{"-n", "-M", "prepared", "-c", strconv.Itoa(conc), "-j", "2",
		"-T", strconv.Itoa(int(dur.Seconds())), "-D", "nusers=" + strconv.Itoa(nusers), "-f", script, databaseURL}
	cmd := exec.CommandContext(ctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return res, fmt.Errorf("pgbench %s: %w: %s", script, err, lastLines(out.String(), 5))
	}
	m := tpsRE.FindStringSubmatch(out.String())
	if m == nil {
		return res, fmt.Errorf("pgbench %s: no tps in output: %s", script, lastLines(out.String(), 5))
	}
	res.TPS, _ = strconv.ParseFloat(m[1], 64)
	if m := pgLatRE.FindStringSubmatch(out.String()); m != nil {
		ms, _ := strconv.ParseFloat(m[1], 64)
		res.P50 = time.Duration(ms * float64(time.Millisecond)) // average, not p50
	}
	return res, nil
}

func lastLines(s string, n int) string {
	lines := bytes.Split(bytes.TrimSpace([]byte(s)), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte(" | ")))
}

// restRateLoad makes method path calls (body: JSON, or nil) open loop at rate per second
// for dur (at most inflight at once), round-robin over the replicas as random users, and
// measures each call from just before it is sent: the REST latency at a fixed rate, to
// compare with pgbenchRate's statement latency at the same rate.
func restRateLoad(ctx context.Context, client *restClient, users []benchUser, name, method, path string, body []byte, rate float64, inflight int, dur time.Duration) restResult {
	var tally restTally
	sem := make(chan struct{}, inflight)
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	rng := rand.New(rand.NewPCG(11, 13))
	for i := 0; ctx.Err() == nil; i++ {
		next := start.Add(time.Duration(i) * interval)
		if next.Sub(start) >= dur {
			break
		}
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		u, replica := users[rng.IntN(len(users))], i%len(client.hosts)
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer func() { fasthttp.ReleaseRequest(req); fasthttp.ReleaseResponse(resp) }()
			client.request(req, replica, method, path, u.Token, body)
			tally.call(client, replica, req, resp)
		})
	}
	wg.Wait()
	return tally.result(restResult{Name: fmt.Sprintf("evo %s at %.0f/s", name, rate), Conc: inflight}, start)
}

// pgbenchRate runs script at rate transactions per second (-R) with conc clients for dur
// and returns the p50 and p99 of the statements' own latency, from pgbench's
// per-transaction log (-l): each line's time minus its schedule lag, i.e. from when the
// statement was sent, as the tool times a REST call.
func pgbenchRate(ctx context.Context, bin, databaseURL, script string, rate float64, conc, nusers int, dur time.Duration) (restResult, error) {
	res := restResult{Name: fmt.Sprintf("pgbench %s at %.0f/s", script, rate), Conc: conc}
	dir, err := os.MkdirTemp("", "evo-pgbench-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	args := []string{"-n", "-M", "prepared", "-c", strconv.Itoa(conc), "-j", "2", "-R", strconv.FormatFloat(rate, 'f', 0, 64),
		"-T", strconv.Itoa(int(dur.Seconds())), "-D", "nusers=" + strconv.Itoa(nusers), "-f", script,
		"-l", "--log-prefix", filepath.Join(dir, "tx"), databaseURL}
	cmd := exec.CommandContext(ctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return res, fmt.Errorf("pgbench %s: %w: %s", script, err, lastLines(out.String(), 5))
	}
	if m := tpsRE.FindStringSubmatch(out.String()); m != nil {
		res.TPS, _ = strconv.ParseFloat(m[1], 64)
	}
	logs, _ := filepath.Glob(filepath.Join(dir, "tx*"))
	lat := new(hist)
	for _, name := range logs {
		data, err := os.ReadFile(name)
		if err != nil {
			return res, err
		}
		// client_id transaction_no time script_no time_epoch time_us schedule_lag (µs)
		for line := range strings.SplitSeq(string(data), "\n") {
			f := strings.Fields(line)
			if len(f) < 7 {
				continue
			}
			us, err1 := strconv.ParseInt(f[2], 10, 64)
			lag, err2 := strconv.ParseInt(f[6], 10, 64)
			if err1 != nil || err2 != nil {
				continue
			}
			lat.Record(time.Duration(us-lag) * time.Microsecond)
			res.Requests++
		}
	}
	if res.Requests == 0 {
		return res, fmt.Errorf("pgbench %s: no transaction log in %s", script, dir)
	}
	res.P50, res.P99, res.lat = lat.Quantile(0.50), lat.Quantile(0.99), lat
	return res, nil
}
