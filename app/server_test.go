package app

import (
	"bytes"
	"context"
	"net/http"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

func TestHealthAndReady(t *testing.T) {
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			ts := startServer(t, b, nil)
			if status, body := ts.do(t, "GET", "/health", "", nil); status != http.StatusOK || string(body) != `{"status":"healthy"}` {
				t.Errorf("health: got %d %s", status, body)
			}
			status, body := ts.do(t, "GET", "/ready", "", nil)
			got := decode[map[string]any](t, body)
			if status != http.StatusOK || got["status"] != "ready" {
				t.Errorf("ready: got %d %s", status, body)
			}
		})
	}
}

// TestStopRightAfterStart stops servers before their listener goroutine
// has necessarily started: each must still stop promptly.
func TestStopRightAfterStart(t *testing.T) {
	for range 10 {
		ts := startServer(t, "sqlite", nil)
		done := make(chan struct{})
		go func() { ts.stop(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("server did not stop within 5s of a stop right after start")
		}
	}
}

// TestTuneGC: evo serve collects at GOGC 150 unless GOGC is set (the environment or
// .env), which then is the target; LoadConfig refuses a GOGC the runtime would ignore.
func TestTuneGC(t *testing.T) {
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })
	for _, tt := range []struct {
		gogc string
		want int
	}{{"", defaultGOGC}, {"80", 80}, {"off", -1}} {
		cfg, err := LoadConfig(getenv(map[string]string{"GOGC": tt.gogc}))
		if err != nil {
			t.Fatalf("GOGC=%q: %v", tt.gogc, err)
		}
		tuneGC(cfg.GOGC)
		if got := debug.SetGCPercent(100); got != tt.want {
			t.Errorf("GOGC=%q: GC percent %d, want %d", tt.gogc, got, tt.want)
		}
	}
	for _, bad := range []string{"abc", "150%", "1.5"} {
		var stdout, stderr bytes.Buffer
		err := Run(context.Background(), []string{"serve"}, getenv(map[string]string{"GOGC": bad, "PORT": "0", "DATA_DIR": t.TempDir()}), &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), "GOGC") || !strings.Contains(err.Error(), "off or an integer") {
			t.Errorf("serve with GOGC=%q: got %v, want it refused naming GOGC", bad, err)
		}
	}
}
