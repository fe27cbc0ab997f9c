package realtime

import "time"

// Metrics receives what a Hub counts, for monitoring: realtime imports no metrics
// library, the application implements this (Evo feeds Prometheus) and sets
// Config.Metrics. Embed NopMetrics to implement only some methods.
//
// The hub calls these on its hot paths, some of them under a socket's lock and on the
// broker's delivery goroutine: an implementation must be cheap (an atomic add), must not
// block and must not call back into the hub.
type Metrics interface {
	// FramesSent counts frames written to a socket.
	FramesSent(n int)
	// FramesDropped counts frames that were never written: refused by a socket whose
	// queue was full or that was closing, or still queued when it closed.
	FramesDropped(n int)
	// SocketClosed is called once for each socket the server closes with a code (see
	// close.go), refusals right after the upgrade included. Sockets that end because the
	// peer closed them or the connection failed are not counted.
	SocketClosed(code int)
	// CatchUp is called when a socket is made to read the event log: reason is one of
	// CatchUpResume, CatchUpConnect, CatchUpGap, CatchUpResubscribed, CatchUpLog.
	CatchUp(reason string)
	// EventsReplayed counts events a socket sent from the event log rather than live.
	EventsReplayed(n int)
	// Resync is called when a socket is told to refetch (the events it asked for were
	// pruned, or it claimed events the log does not have).
	Resync()
	// FrameRateLimited is called for each inbound frame dropped by the per-socket rate
	// limit (Config.RateLimit).
	FrameRateLimited()
	// BrokerPublish is called after each Broker.Publish with how long it took and its
	// error.
	BrokerPublish(d time.Duration, err error)
	// BrokerReceive is called for each publication the broker delivers to this replica.
	BrokerReceive()
	// BrokerResubscribed is called when the broker lost its connection and subscribed
	// again (messages may have been lost; every socket catches up).
	BrokerResubscribed()
	// EventHeld is called for each sequenced publication that reached this replica
	// after a gap in its user's seqs and was held for the missing one (see sequencer).
	EventHeld()
	// GapExpired is called when a gap stayed open for Config.GapWait: what was held
	// goes out and the user's sockets read the missing events from the log.
	GapExpired()
}

// Reasons of Metrics.CatchUp.
const (
	// CatchUpResume: the client sent resume.
	CatchUpResume = "resume"
	// CatchUpConnect: a new socket reads what was committed since hello.
	CatchUpConnect = "connect"
	// CatchUpGap: a live event arrived with a seq gap (the broker lost a message).
	CatchUpGap = "gap"
	// CatchUpResubscribed: the broker reconnected.
	CatchUpResubscribed = "resubscribed"
	// CatchUpLog: the hub's log check (Config.LogCheck) found an event committed but
	// never delivered (its writer died before publishing, or the publish failed).
	CatchUpLog = "log"
)

// NopMetrics implements Metrics by doing nothing; it is what a Hub uses when
// Config.Metrics is nil.
type NopMetrics struct{}

var _ Metrics = NopMetrics{}

func (NopMetrics) FramesSent(int)                     {}
func (NopMetrics) FramesDropped(int)                  {}
func (NopMetrics) SocketClosed(int)                   {}
func (NopMetrics) CatchUp(string)                     {}
func (NopMetrics) EventsReplayed(int)                 {}
func (NopMetrics) Resync()                            {}
func (NopMetrics) FrameRateLimited()                  {}
func (NopMetrics) BrokerPublish(time.Duration, error) {}
func (NopMetrics) BrokerReceive()                     {}
func (NopMetrics) BrokerResubscribed()                {}
func (NopMetrics) EventHeld()                         {}
func (NopMetrics) GapExpired()                        {}
