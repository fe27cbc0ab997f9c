package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
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

// restLoad runs conc workers for dur, each sending one request after the other to replica
// w%len(httpURL) as a random user: kind "list" is GET /api/todos?limit=20, "create" is
// POST /api/todos.
func restLoad(ctx context.Context, client *http.Client, httpURL []string, users []benchUser, kind string, conc int, dur time.Duration) restResult {
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
			base := httpURL[w%len(httpURL)]
			for time.Now().Before(deadline) && ctx.Err() == nil {
				u := users[rng.IntN(len(users))]
				var req *http.Request
				if kind == "list" {
					req, _ = http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/todos?limit=20", nil)
				} else {
					req, _ = http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/todos",
						bytes.NewReader([]byte(`{"title":"made by the REST benchmark","description":"made by the load tool"}`)))
					req.Header.Set("Content-Type", "application/json")
				}
				req.Header.Set("Authorization", "Bearer "+u.Token)
				t0 := time.Now()
				resp, err := client.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode >= 300 {
						err = fmt.Errorf("%s %s: %s", req.Method, req.URL.Path, resp.Status)
					}
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
