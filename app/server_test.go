package app

import (
	"net/http"
	"testing"
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
