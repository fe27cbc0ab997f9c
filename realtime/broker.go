package realtime

import (
	"context"
	"encoding/binary"
	"errors"
)

// Publication is one message of a user's stream. Seq > 0 marks a durable event from the
// user's event log (gap-free, monotonic per user); Seq == 0 is ephemeral (chat tokens),
// delivered best-effort in arrival order (on the broker an ephemeral publication's seq is
// minus its hub's id). Data is a complete JSON text frame, encoded once.
type Publication struct {
	Seq  int64
	Data []byte
}

// History is what the hub needs of the durable event log.
type History interface {
	// Since returns up to limit publications of the user's stream with Seq > since, in Seq order.
	Since(ctx context.Context, user string, since int64, limit int) ([]Publication, error)
	// LastSeq returns the user's latest seq (0 if none).
	LastSeq(ctx context.Context, user string) (int64, error)
}

// Broker fans publications out to every replica. Channel names are chosen by the hub
// ("user:" + user id); a broker may add its own prefix on the wire.
type Broker interface {
	// Subscribe returns once the subscription to channels is active (Redis: confirmed by
	// the server), so that a publication made after it returns is delivered.
	Subscribe(ctx context.Context, channels ...string) error
	// Unsubscribe stops delivery of channels.
	Unsubscribe(ctx context.Context, channels ...string) error
	// Publish sends data to every subscriber of channel, on every replica.
	Publish(ctx context.Context, channel string, data []byte) error
	// RegisterEventHandler sets the handler of incoming publications. It is called once,
	// before the first Subscribe.
	RegisterEventHandler(h BrokerEventHandler)
}

// BrokerEventHandler receives what a Broker delivers. Its methods must not block: they
// run on the broker's delivery goroutine.
type BrokerEventHandler interface {
	// HandlePublication is called with every message published on a subscribed channel.
	HandlePublication(channel string, data []byte)
	// HandleResubscribed is called after the broker lost its connection and re-established
	// its subscriptions: messages published meanwhile may be lost, so every client catches up from History.
	HandleResubscribed()
}

// ErrBrokerClosed is returned by a broker's methods after it was closed.
var ErrBrokerClosed = errors.New("realtime: broker closed")

// seqSize is the length of the header of a publication on the broker: its seq, big endian.
const seqSize = 8

// encodePublication frames p for the broker: 8-byte big-endian seq, then Data.
func encodePublication(p Publication) []byte {
	b := make([]byte, seqSize+len(p.Data))
	binary.BigEndian.PutUint64(b, uint64(p.Seq))
	copy(b[seqSize:], p.Data)
	return b
}

// decodePublication is the inverse of encodePublication. Data aliases b.
func decodePublication(b []byte) (Publication, error) {
	if len(b) < seqSize {
		return Publication{}, errors.New("realtime: short publication")
	}
	return Publication{Seq: int64(binary.BigEndian.Uint64(b)), Data: b[seqSize:]}, nil
}
