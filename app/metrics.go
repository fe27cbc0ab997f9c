package app

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/evotodo/evo/agent"
	"github.com/evotodo/evo/realtime"
	"github.com/evotodo/evo/store"
)

// Prometheus metrics, served at GET /metrics.
//
// Every Server has its own registry (no package state, so tests run many
// replicas in one process). The hub and the chat runner report through the
// small interfaces their packages declare, realtime.Metrics and
// agent.Metrics, which *metrics implements: neither package imports
// Prometheus. Label values come from closed sets (route patterns, never raw
// paths; close codes; error codes; tool names the server registered), so a
// client cannot grow the series.

// unmatchedRoute is the route label of a request no route matched.
const unmatchedRoute = "unmatched"

// metrics holds one replica's collectors.
type metrics struct {
	reg      *prometheus.Registry
	routes   routeTable // set by routes(), once every route is registered
	provider string     // LLM_PROVIDER, the model metrics' label

	httpRequests *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec

	framesSent      prometheus.Counter
	framesDropped   prometheus.Counter
	wsCloses        *prometheus.CounterVec
	slowConsumers   prometheus.Counter
	catchUps        *prometheus.CounterVec
	eventsReplayed  prometheus.Counter
	resyncs         prometheus.Counter
	brokerPublishes *prometheus.CounterVec
	brokerLatency   prometheus.Histogram
	brokerReceived  prometheus.Counter
	brokerResubs    prometheus.Counter
	eventsHeld      prometheus.Counter
	gapsExpired     prometheus.Counter

	chatRuns     *prometheus.CounterVec
	chatDuration *prometheus.HistogramVec
	modelCalls   *prometheus.HistogramVec
	modelTokens  *prometheus.CounterVec
	toolCalls    *prometheus.CounterVec

	rateLimited *prometheus.CounterVec
}

var (
	_ realtime.Metrics = (*metrics)(nil)
	_ agent.Metrics    = (*metrics)(nil)
)

// Buckets of the latency histograms, in seconds.
var (
	// modelBuckets spans a quick local model to LLM_TIMEOUT's default.
	modelBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120}
	// brokerBuckets spans an in-process publish (microseconds) to a slow
	// Redis round trip: 0.1 ms to 1.6 s.
	brokerBuckets = prometheus.ExponentialBuckets(0.0001, 4, 8)
	// httpBuckets are Prometheus' defaults (5 ms to 10 s) below sub-millisecond
	// ones: most requests here take well under 5 ms.
	httpBuckets = append([]float64{0.00025, 0.0005, 0.001, 0.0025}, prometheus.DefBuckets...)
)

// newMetrics registers Evo's collectors, and Go's and the process's, on a
// new registry.
func newMetrics(cfg Config) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), provider: cfg.LLMProvider}
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		m.reg.MustRegister(c)
		return c
	}
	counterVec := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		m.reg.MustRegister(c)
		return c
	}
	histogramVec := func(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
		m.reg.MustRegister(h)
		return h
	}

	m.httpRequests = counterVec("evo_http_requests_total",
		"HTTP requests answered, by method, route pattern and status.", "method", "route", "status")
	m.httpDuration = histogramVec("evo_http_request_duration_seconds",
		"Time to answer an HTTP request (for SSE and WebSocket upgrades: until the stream or socket starts), by method and route pattern.",
		httpBuckets, "method", "route")

	m.framesSent = counter("evo_ws_frames_sent_total", "WebSocket frames written to sockets.")
	m.framesDropped = counter("evo_ws_frames_dropped_total",
		"WebSocket frames never written: refused by a socket whose queue was full or that was closing, or still queued when it closed.")
	m.wsCloses = counterVec("evo_ws_closes_total",
		"Sockets the server closed, by close code (1001 going away, 1011 internal error, 3000 token expired, 3001 slow consumer, 3002 replica full, 3500 bad request, 3501 too many connections, 3502 forbidden).", "code")
	m.slowConsumers = counter("evo_ws_slow_consumer_disconnects_total",
		"Sockets closed because their send queue (WS_QUEUE_SIZE) overflowed (close code 3001).")
	m.catchUps = counterVec("evo_ws_catchups_total",
		"Reads of the event log by a socket, by reason: resume (the client resumed), connect (went live without resume), gap (a lost broker message), resubscribed (the broker reconnected).", "reason")
	m.eventsReplayed = counter("evo_ws_events_replayed_total", "Events sent to sockets from the event log rather than live.")
	m.resyncs = counter("evo_ws_resyncs_total", "resync frames sent: the events a socket asked for were pruned from the log.")
	m.brokerPublishes = counterVec("evo_broker_publishes_total", "Publications sent to the broker, by outcome (ok, error).", "outcome")
	m.brokerLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "evo_broker_publish_duration_seconds", Help: "Time of one broker publish (Redis: from the hand-over to Redis's answer, the wait in the publish queue included).", Buckets: brokerBuckets})
	m.reg.MustRegister(m.brokerLatency)
	m.brokerReceived = counter("evo_broker_received_total", "Publications the broker delivered to this replica.")
	m.brokerResubs = counter("evo_broker_resubscribes_total", "Times the broker lost its connection and subscribed again.")
	m.eventsHeld = counter("evo_broker_events_held_total",
		"Events that reached this replica after a later seq of their user (published out of order) and were held until the missing one came.")
	m.gapsExpired = counter("evo_broker_gaps_expired_total",
		"Gaps in a user's seqs still open after WS_GAP_WAIT (a publication was lost): the user's sockets read the log.")

	m.chatRuns = counterVec("evo_chat_runs_total", "Chat runs ended, by outcome (completed, cancelled, failed).", "outcome")
	m.chatDuration = histogramVec("evo_chat_run_duration_seconds", "Time of one chat run, all its model and tool calls included, by outcome.",
		modelBuckets, "outcome")
	m.modelCalls = histogramVec("evo_model_call_duration_seconds",
		"Time of one model call, its stream included, by provider and outcome (ok, error, timeout, cancelled).", modelBuckets, "provider", "outcome")
	m.modelTokens = counterVec("evo_model_tokens_total", "Pieces of answer text (tokens) streamed by the model, by provider.", "provider")
	m.toolCalls = counterVec("evo_tool_calls_total",
		"Todo tool calls, by tool, outcome (ok, or the error code: invalid, not_found, ...) and caller (chat, mcp).", "tool", "outcome", "via")

	m.rateLimited = counterVec("evo_rate_limited_total",
		"Requests refused by a rate limit, by surface: writes (RATE_LIMIT_WRITES), chat (CHAT_RATE_LIMIT), ws (inbound frames, WS_RATE_LIMIT).", "surface")

	build := prometheus.NewGauge(prometheus.GaugeOpts{Name: "evo_build_info", Help: "Always 1; the version label is the build's.",
		ConstLabels: prometheus.Labels{"version": Version}})
	build.Set(1)
	m.reg.MustRegister(build, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// Series of known label values start at 0, so that rate() and alerts
	// see them before the first event.
	for _, s := range []string{surfaceWrites, surfaceChat, surfaceWS} {
		m.rateLimited.WithLabelValues(s)
	}
	for _, o := range []string{chatCompleted, chatCancelled, chatFailed} {
		m.chatRuns.WithLabelValues(o)
	}
	for _, r := range []string{realtime.CatchUpResume, realtime.CatchUpConnect, realtime.CatchUpGap, realtime.CatchUpResubscribed, realtime.CatchUpLog} {
		m.catchUps.WithLabelValues(r)
	}
	m.brokerPublishes.WithLabelValues("ok")
	m.brokerPublishes.WithLabelValues("error")
	m.modelTokens.WithLabelValues(m.provider)
	return m
}

// watchHub registers the open-sockets gauge of hub.
func (m *metrics) watchHub(hub *realtime.Hub) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "evo_ws_connections", Help: "Open WebSockets on this replica."},
		func() float64 { return float64(hub.Conns()) }))
}

// observeHTTP records one answered request.
func (m *metrics) observeHTTP(method, path string, status int, took time.Duration) {
	route := m.routes.match(path)
	method = methodLabel(method)
	m.httpRequests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
	m.httpDuration.WithLabelValues(method, route).Observe(took.Seconds())
}

// httpMethods are the methods the method label names; others are "OTHER".
var httpMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodPatch, http.MethodDelete, http.MethodOptions}

// methodLabel returns the label of method: the constant, never method
// itself, whose bytes Fiber reuses for the next request (labels are kept).
func methodLabel(method string) string {
	if i := slices.Index(httpMethods, method); i >= 0 {
		return httpMethods[i]
	}
	return "OTHER"
}

// chatRun records a chat run's end; status is the stored exchange's.
func (m *metrics) chatRun(status string, took time.Duration) {
	m.chatRuns.WithLabelValues(status).Inc()
	m.chatDuration.WithLabelValues(status).Observe(took.Seconds())
}

// realtime.Metrics.

func (m *metrics) FramesSent(n int)    { m.framesSent.Add(float64(n)) }
func (m *metrics) FramesDropped(n int) { m.framesDropped.Add(float64(n)) }
func (m *metrics) SocketClosed(code int) {
	m.wsCloses.WithLabelValues(strconv.Itoa(code)).Inc()
	if code == realtime.CloseSlowConsumer {
		m.slowConsumers.Inc()
	}
}
func (m *metrics) CatchUp(reason string) { m.catchUps.WithLabelValues(reason).Inc() }
func (m *metrics) EventsReplayed(n int)  { m.eventsReplayed.Add(float64(n)) }
func (m *metrics) Resync()               { m.resyncs.Inc() }
func (m *metrics) FrameRateLimited()     { m.rateLimited.WithLabelValues(surfaceWS).Inc() }
func (m *metrics) BrokerPublish(d time.Duration, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.brokerPublishes.WithLabelValues(outcome).Inc()
	m.brokerLatency.Observe(d.Seconds())
}
func (m *metrics) BrokerReceive()      { m.brokerReceived.Inc() }
func (m *metrics) BrokerResubscribed() { m.brokerResubs.Inc() }
func (m *metrics) EventHeld()          { m.eventsHeld.Inc() }
func (m *metrics) GapExpired()         { m.gapsExpired.Inc() }

// agent.Metrics: the chat runner's model and tool calls.

func (m *metrics) ModelCall(d time.Duration, err error) {
	outcome := "ok"
	var me *agent.ModelError
	switch {
	case err == nil:
	case errors.As(err, &me) && me.Timeout > 0:
		outcome = "timeout"
	case errors.As(err, &me):
		outcome = "error"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		outcome = "cancelled"
	default:
		outcome = "error"
	}
	m.modelCalls.WithLabelValues(m.provider, outcome).Observe(d.Seconds())
}

func (m *metrics) Token() { m.modelTokens.WithLabelValues(m.provider).Inc() }

func (m *metrics) ToolCall(name string, _ time.Duration, err error) {
	m.toolCalls.WithLabelValues(name, toolOutcome(err), "chat").Inc()
}

// toolOutcome is "ok" or err's error code.
func toolOutcome(err error) string {
	if err == nil {
		return "ok"
	}
	return store.ErrorCode(err)
}

// mcpTools is the /mcp server's tool middleware: it counts each call
// (mcp-go calls it only for tools the server has, so the name is one of
// them).
func (m *metrics) mcpTools(next server.ToolHandlerFunc) server.ToolHandlerFunc {
	return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		res, err := next(ctx, req)
		outcome := "ok"
		switch {
		case err != nil:
			outcome = store.CodeInternal
		case res != nil && res.IsError:
			outcome = store.CodeInternal
			if sc, ok := res.StructuredContent.(map[string]agent.ToolError); ok && sc["error"].Code != "" {
				outcome = sc["error"].Code
			}
		}
		m.toolCalls.WithLabelValues(req.Params.Name, outcome, "mcp").Inc()
		return res, err
	}
}

// mountMetrics serves GET /metrics: this replica's metrics in the
// Prometheus text format. With METRICS_TOKEN set it needs
// "Authorization: Bearer <METRICS_TOKEN>" (else 401).
func (s *Server) mountMetrics(app *fiber.App) {
	h := adaptor.HTTPHandler(promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelError),
		Registry: s.metrics.reg, // promhttp_metric_handler_errors_total
	}))
	app.Get("/metrics", func(c *fiber.Ctx) error {
		if want := s.cfg.MetricsToken; want != "" {
			got, err := bearer(c.Get(fiber.HeaderAuthorization))
			if err == nil && subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
				err = store.Errorf(store.CodeUnauthorized, "wrong metrics token (METRICS_TOKEN)")
			}
			if err != nil {
				return s.challenge(c, err)
			}
		}
		return h(c)
	})
}

// routeTable maps a request path to the pattern of the route that serves
// it, for the route label: a label per raw path would let clients create
// series at will.
type routeTable []routePattern

type routePattern struct {
	pattern string   // as registered: /api/todos/:id
	segs    []string // its segments: api, todos, :id
	params  int
}

// newRouteTable returns the table of routes (app.GetRoutes(true)): literal
// segments before parameters, so /api/dev/token wins over a pattern that
// would also match it.
func newRouteTable(routes []fiber.Route) routeTable {
	var t routeTable
	seen := map[string]bool{}
	for _, r := range routes {
		if seen[r.Path] {
			continue
		}
		seen[r.Path] = true
		p := routePattern{pattern: r.Path, segs: pathSegments(r.Path)}
		for _, s := range p.segs {
			if strings.HasPrefix(s, ":") || s == "*" {
				p.params++
			}
		}
		t = append(t, p)
	}
	slices.SortStableFunc(t, func(a, b routePattern) int { return a.params - b.params })
	return t
}

// match returns the pattern of the route serving path, whatever its
// method, or "unmatched".
func (t routeTable) match(path string) string {
	path = strings.Trim(path, "/") // as pathSegments: no allocation per request
	for _, p := range t {
		if p.matches(path) {
			return p.pattern
		}
	}
	return unmatchedRoute
}

// matches reports whether path, trimmed of its slashes, has the pattern's
// segments (those of pathSegments(path)).
func (p routePattern) matches(path string) bool {
	rest, more := path, path != "" // more: a segment is left in rest
	for _, s := range p.segs {
		if s == "*" {
			return true
		}
		if !more {
			return false
		}
		var seg string
		seg, rest, more = strings.Cut(rest, "/")
		switch {
		case strings.HasPrefix(s, ":"):
			if seg == "" {
				return false
			}
		case !strings.EqualFold(s, seg): // Fiber routes are case-insensitive
			return false
		}
	}
	return !more
}

// pathSegments splits a path at its slashes, ignoring the leading and a
// trailing one (Fiber's routing is not strict about it).
func pathSegments(path string) []string {
	path = strings.Trim(path, "/")
	if path == "" {
		return nil
	}
	return strings.Split(path, "/")
}
