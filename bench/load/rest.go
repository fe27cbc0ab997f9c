package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
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

// restLoad runs conc workers for dur, each sending one request after the other to replica
// w%len(client.hosts) as a random user: kind "list" is GET /api/todos?limit=20, "create"
// is POST /api/todos.
func restLoad(ctx context.Context, client *restClient, users []benchUser, kind string, conc int, dur time.Duration) restResult {
	res := restResult{Name: "evo " + kind, Conc: conc}
	var lat hist
	var n, errs atomic.Int64
	var once sync.Once
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
				t0 := time.Now()
				err := client.do(replica, req, resp)
				if err == nil && resp.StatusCode() >= 300 {
					err = fmt.Errorf("%s %s: %s", req.Header.Method(), req.URI().Path(), status(resp.StatusCode()))
				}
				if err != nil {
					errs.Add(1)
					once.Do(func() { res.FirstErr = err.Error() })
					continue
				}
				lat.Record(time.Since(t0))
				n.Add(1)
			}
		})
	}
	wg.Wait()
	res.Requests, res.Errors = n.Load(), errs.Load()
	res.TPS = float64(res.Requests) / time.Since(start).Seconds()
	res.P50, res.P99 = lat.Quantile(0.50), lat.Quantile(0.99)
	return res
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
