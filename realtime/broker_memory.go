package realtime

import (
	"context"
	"sync"
)

var _ Broker = (*MemoryBroker)(nil)

// MemoryBroker is the in-process Broker of a single replica. Publish calls the handler
// synchronously, on the publisher's goroutine, for channels that are subscribed.
type MemoryBroker struct {
	mu      sync.RWMutex
	handler BrokerEventHandler
	subs    map[string]struct{}
}

// NewMemoryBroker returns an empty MemoryBroker.
func NewMemoryBroker() *MemoryBroker {
	return &MemoryBroker{subs: make(map[string]struct{})}
}

// RegisterEventHandler implements Broker.
func (b *MemoryBroker) RegisterEventHandler(h BrokerEventHandler) {
	b.mu.Lock()
	b.handler = h
	b.mu.Unlock()
}

// Subscribe implements Broker; the subscription is active when it returns.
func (b *MemoryBroker) Subscribe(_ context.Context, channels ...string) error {
	b.mu.Lock()
	for _, ch := range channels {
		b.subs[ch] = struct{}{}
	}
	b.mu.Unlock()
	return nil
}

// Unsubscribe implements Broker.
func (b *MemoryBroker) Unsubscribe(_ context.Context, channels ...string) error {
	b.mu.Lock()
	for _, ch := range channels {
		delete(b.subs, ch)
	}
	b.mu.Unlock()
	return nil
}

// Publish implements Broker: it hands data to the handler before returning if channel is
// subscribed, and drops it otherwise.
func (b *MemoryBroker) Publish(_ context.Context, channel string, data []byte) error {
	b.mu.RLock()
	_, ok := b.subs[channel]
	h := b.handler
	b.mu.RUnlock()
	if ok && h != nil {
		h.HandlePublication(channel, data)
	}
	return nil
}
