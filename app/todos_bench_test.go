package app

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/evotodo/evo/store"
)

// BenchmarkREST runs the REST API of one replica on PostgreSQL over loopback HTTP with
// real JWT verification, 32 concurrent clients (as the load tool's rest shape): "list" is
// GET /api/todos?limit=20 for users with 25 todos, "create" is POST /api/todos (the
// event log append and the publish to the hub included). The client runs in the same
// process: profile with -cpuprofile to see where the server's time goes.
func BenchmarkREST(b *testing.B) {
	// The write limit (RATE_LIMIT_WRITES, 120 a minute per user) would refuse most of
	// the creates: it still runs, it never refuses.
	ts := startServer(b, "postgres", map[string]string{"RATE_LIMIT_WRITES": "100000000"})
	const users = 8
	tokens := make([]string, users)
	for i := range tokens {
		u, tok := ts.user(b)
		tokens[i] = tok
		for j := range 25 {
			if _, err := ts.srv.todos.Create(context.Background(), u.ID, store.TodoCreate{Title: fmt.Sprintf("todo %d", j)}); err != nil {
				b.Fatal(err)
			}
		}
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	for _, tc := range []struct {
		name, method, path, body string
		want                     int
	}{
		{"list", http.MethodGet, "/api/todos?limit=20", "", http.StatusOK},
		{"create", http.MethodPost, "/api/todos", `{"title":"made by BenchmarkREST","description":"a description"}`, http.StatusCreated},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var next atomic.Int64
			b.SetParallelism(16) // 32 clients on 2 CPUs
			cpu0 := processCPU(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				tok := tokens[int(next.Add(1))%users]
				for pb.Next() {
					var body io.Reader
					if tc.body != "" {
						body = bytes.NewReader([]byte(tc.body))
					}
					req, _ := http.NewRequest(tc.method, ts.URL+tc.path, body)
					req.Header.Set("Authorization", "Bearer "+tok)
					req.Header.Set("Content-Type", "application/json")
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != tc.want {
						b.Errorf("%s %s: %d", tc.method, tc.path, resp.StatusCode)
						return
					}
				}
			})
			// The CPU of this process (server and clients, not PostgreSQL) per request:
			// on a busy machine a steadier measure of Evo's own cost than the time.
			b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// processCPU is the user and system CPU time this process used so far, in nanoseconds.
func processCPU(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
