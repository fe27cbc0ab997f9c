package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// scrape reads the replicas' /metrics (Prometheus text) and sums the evo_* series that
// are not histogram buckets over the replicas. A replica without /metrics counts as
// empty.
func (r *runner) scrape(ctx context.Context) map[string]float64 {
	out := map[string]float64{}
	client := &http.Client{Timeout: 5 * time.Second}
	for _, base := range r.httpURL {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
		resp, err := client.Do(req)
		if err != nil {
			continue
		}
		if resp.StatusCode == http.StatusOK {
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				line := sc.Text()
				if !strings.HasPrefix(line, "evo_") || strings.Contains(line, "_bucket{") {
					continue
				}
				i := strings.LastIndexByte(line, ' ')
				if i < 0 {
					continue
				}
				v, err := strconv.ParseFloat(line[i+1:], 64)
				if err == nil {
					out[line[:i]] += v
				}
			}
		}
		resp.Body.Close()
	}
	return out
}

// metricsNote summarizes what the replicas counted between two scrapes: the catch-ups
// (reads of the event log) by reason, the events they replayed, dropped frames, and the
// mean Redis publish time.
func metricsNote(a, b map[string]float64) string {
	if len(b) == 0 {
		return ""
	}
	d := func(k string) float64 { return b[k] - a[k] }
	var parts []string
	for _, reason := range []string{"gap", "resubscribed", "connect", "resume"} {
		if v := d(`evo_ws_catchups_total{reason="` + reason + `"}`); v > 0 {
			parts = append(parts, fmt.Sprintf("%.0f %s catch-ups", v, reason))
		}
	}
	if v := d("evo_broker_events_held_total"); v > 0 {
		parts = append(parts, fmt.Sprintf("%.0f events held for a missing seq", v))
	}
	if v := d("evo_broker_gaps_expired_total"); v > 0 {
		parts = append(parts, fmt.Sprintf("%.0f gaps expired", v))
	}
	if v := d("evo_ws_events_replayed_total"); v > 0 {
		parts = append(parts, fmt.Sprintf("%.0f events replayed from the log", v))
	}
	if v := d("evo_ws_frames_dropped_total"); v > 0 {
		parts = append(parts, fmt.Sprintf("%.0f frames dropped", v))
	}
	if v := d("evo_ws_slow_consumer_disconnects_total"); v > 0 {
		parts = append(parts, fmt.Sprintf("%.0f slow-consumer disconnects", v))
	}
	if n := d("evo_broker_publish_duration_seconds_count"); n > 0 {
		parts = append(parts, fmt.Sprintf("%.0f Redis publishes, mean %.2f ms", n, 1000*d("evo_broker_publish_duration_seconds_sum")/n))
	}
	if len(parts) == 0 {
		return ""
	}
	return "replicas' /metrics: " + strings.Join(parts, ", ")
}
