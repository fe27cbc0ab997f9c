package app

import (
	"net/http"
	"runtime/debug"
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

// TestTuneGC: evo serve collects at GOGC 150 unless the environment sets GOGC, which then
// stays the runtime's.
func TestTuneGC(t *testing.T) {
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })
	tuneGC(getenv(nil))
	if got := debug.SetGCPercent(100); got != defaultGOGC {
		t.Fatalf("GOGC unset: GC percent %d, want %d", got, defaultGOGC)
	}
	tuneGC(getenv(map[string]string{"GOGC": "80"}))
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("GOGC=80 set: GC percent changed to %d", got)
	}
}
