package realtime

import (
	"context"
	"fmt"
	"log/slog"
)

// controlChannel is the broker channel every hub that listens for control messages
// subscribes (see Hub.ListenControl).
const controlChannel = "control"

// ListenControl subscribes the hub to the control channel that every replica's hub
// shares and hands each message broadcast on it (Hub.Broadcast, by any replica, this
// one included) to fn. fn runs on the broker's delivery goroutine: it must not block
// (start a goroutine for network calls). Call it once, before serving.
func (h *Hub) ListenControl(ctx context.Context, fn func(data []byte)) error {
	h.control.Store(&fn)
	if err := h.broker.Subscribe(ctx, controlChannel); err != nil {
		return fmt.Errorf("subscribe control channel: %w", err)
	}
	return nil
}

// Broadcast publishes a control message to every replica's hub.
func (h *Hub) Broadcast(ctx context.Context, data []byte) error {
	if err := h.broker.Publish(ctx, controlChannel, data); err != nil {
		return fmt.Errorf("broadcast: %w", err)
	}
	return nil
}

// Clustered reports whether the hub's broker reaches other replicas (a MemoryBroker
// does not: the hub is the only one).
func (h *Hub) Clustered() bool {
	_, single := h.broker.(*MemoryBroker)
	return !single
}

func (h *Hub) handleControl(data []byte) {
	fn := h.control.Load()
	if fn == nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			h.log.Error("realtime: control handler panicked", slog.Any("panic", r))
		}
	}()
	(*fn)(data)
}
