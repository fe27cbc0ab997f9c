package agent

import "time"

// Metrics receives what a Runner counts, for monitoring: agent imports no metrics
// library, the application implements this (Evo feeds Prometheus) and sets
// Config.Metrics. Calls come from the run's goroutine, as the run goes; they must be
// cheap and must not block.
type Metrics interface {
	// ModelCall is called after each model call with how long it took, its stream
	// included, and its error: nil, a *ModelError, or the run's context error when the
	// run was cancelled.
	ModelCall(d time.Duration, err error)
	// Token is called for each piece of the answer streamed to the Sink.
	Token()
	// ToolCall is called after each tool call the model asked for, with the tool's name
	// ("unknown" when the model named no such tool) and the tool's error (nil on
	// success; store.ErrorCode reads its code).
	ToolCall(name string, d time.Duration, err error)
}

// nopMetrics is the Metrics of a Runner whose Config has none.
type nopMetrics struct{}

func (nopMetrics) ModelCall(time.Duration, error)        {}
func (nopMetrics) Token()                                {}
func (nopMetrics) ToolCall(string, time.Duration, error) {}
