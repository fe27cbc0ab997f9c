package realtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

var _ Broker = (*RedisBroker)(nil)

// redisChannelSize is the buffer of go-redis's message channel. go-redis drops a message
// only after this buffer stayed full for 60s.
const redisChannelSize = 4096

// RedisBroker is a Broker on Redis pub/sub, for many replicas. It holds one PubSub
// connection for all its channels and one goroutine reading it, started by
// NewRedisBroker and ended by Close.
//
// Redis pub/sub is at most once: go-redis reconnects and resubscribes on its own, and what
// was published meanwhile is lost. The broker notices the resubscription (a "subscribe"
// confirmation for a channel it already had confirmed) and calls
// BrokerEventHandler.HandleResubscribed once per reconnect, so the hub can catch up from
// its History.
type RedisBroker struct {
	client redis.UniversalClient
	prefix string
	log    *slog.Logger
	pubsub *redis.PubSub
	msgs   <-chan any

	closeOnce sync.Once
	closing   chan struct{} // closed by Close
	done      chan struct{} // closed when the read goroutine returned

	mu      sync.Mutex
	handler BrokerEventHandler
	subs    map[string]*redisSub // by full (prefixed) channel name
	// gen counts reconnects seen. A confirmation for a confirmed channel whose gen equals
	// b.gen starts a new reconnect (gen++ and one HandleResubscribed); the confirmations
	// of the other channels in the same reconnect only catch up with b.gen.
	gen uint64
}

type redisSub struct {
	confirmed bool
	gen       uint64
	waiters   []chan struct{}
}

// NewRedisBroker returns a broker publishing and subscribing through client, with every
// channel name prefixed by prefix (e.g. "evo:"), and starts its read goroutine; go-redis
// connects the PubSub connection in the background (and keeps reconnecting). Call Close to
// stop both.
func NewRedisBroker(client redis.UniversalClient, prefix string, log *slog.Logger) (*RedisBroker, error) {
	if client == nil {
		return nil, errors.New("realtime: redis broker: nil client")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &RedisBroker{
		client:  client,
		prefix:  prefix,
		log:     log,
		closing: make(chan struct{}),
		done:    make(chan struct{}),
		subs:    make(map[string]*redisSub),
	}
	// Subscribe with no channels returns a PubSub without connecting.
	b.pubsub = client.Subscribe(context.Background())
	b.msgs = b.pubsub.ChannelWithSubscriptions(redis.WithChannelSize(redisChannelSize))
	go b.run()
	return b, nil
}

// Close closes the PubSub connection and waits for the read goroutine to return.
// Subscribe calls still waiting return ErrBrokerClosed.
func (b *RedisBroker) Close() error {
	var err error
	b.closeOnce.Do(func() {
		close(b.closing)
		err = b.pubsub.Close()
	})
	<-b.done
	return err
}

// RegisterEventHandler implements Broker.
func (b *RedisBroker) RegisterEventHandler(h BrokerEventHandler) {
	b.mu.Lock()
	b.handler = h
	b.mu.Unlock()
}

// Subscribe implements Broker. It returns once Redis confirmed every channel, or with
// ctx's error (then the channels are unsubscribed again).
func (b *RedisBroker) Subscribe(ctx context.Context, channels ...string) error {
	if len(channels) == 0 {
		return nil
	}
	full := b.names(channels)
	waiters := make([]chan struct{}, len(full))
	b.mu.Lock()
	for i, ch := range full {
		s := b.subs[ch]
		if s == nil {
			s = &redisSub{}
			b.subs[ch] = s
		}
		waiters[i] = make(chan struct{})
		s.waiters = append(s.waiters, waiters[i])
	}
	b.mu.Unlock()

	err := b.pubsub.Subscribe(ctx, full...)
	for i := 0; err == nil && i < len(waiters); i++ {
		select {
		case <-waiters[i]:
		case <-ctx.Done():
			err = ctx.Err()
		case <-b.closing:
			err = ErrBrokerClosed
		}
	}
	if err != nil {
		b.forget(full)
		// go-redis keeps a channel whose SUBSCRIBE failed, to resubscribe it after a reconnect.
		if uerr := b.pubsub.Unsubscribe(context.WithoutCancel(ctx), full...); uerr != nil {
			b.log.Warn("realtime: redis unsubscribe after failed subscribe", slog.Any("error", uerr))
		}
		return fmt.Errorf("redis subscribe %s: %w", strings.Join(channels, ","), err)
	}
	return nil
}

// Unsubscribe implements Broker. It does not wait for Redis to confirm.
func (b *RedisBroker) Unsubscribe(ctx context.Context, channels ...string) error {
	if len(channels) == 0 {
		return nil
	}
	full := b.names(channels)
	b.forget(full)
	if err := b.pubsub.Unsubscribe(ctx, full...); err != nil {
		return fmt.Errorf("redis unsubscribe %s: %w", strings.Join(channels, ","), err)
	}
	return nil
}

// Publish implements Broker.
func (b *RedisBroker) Publish(ctx context.Context, channel string, data []byte) error {
	if err := b.client.Publish(ctx, b.prefix+channel, data).Err(); err != nil {
		return fmt.Errorf("redis publish %s: %w", channel, err)
	}
	return nil
}

func (b *RedisBroker) names(channels []string) []string {
	full := make([]string, len(channels))
	for i, ch := range channels {
		full[i] = b.prefix + ch
	}
	return full
}

func (b *RedisBroker) forget(full []string) {
	b.mu.Lock()
	for _, ch := range full {
		delete(b.subs, ch)
	}
	b.mu.Unlock()
}

// run reads the PubSub channel until go-redis closes it (after Close).
func (b *RedisBroker) run() {
	defer close(b.done)
	for m := range b.msgs {
		switch m := m.(type) {
		case *redis.Message:
			b.handleMessage(m)
		case *redis.Subscription:
			b.handleSubscription(m)
		}
	}
}

func (b *RedisBroker) handleMessage(m *redis.Message) {
	ch, ok := strings.CutPrefix(m.Channel, b.prefix)
	if !ok {
		return
	}
	b.mu.Lock()
	h := b.handler
	b.mu.Unlock()
	if h != nil {
		h.HandlePublication(ch, []byte(m.Payload))
	}
}

func (b *RedisBroker) handleSubscription(m *redis.Subscription) {
	if m.Kind != "subscribe" {
		return
	}
	b.mu.Lock()
	s := b.subs[m.Channel]
	if s == nil { // unsubscribed meanwhile
		b.mu.Unlock()
		return
	}
	if !s.confirmed || len(s.waiters) > 0 {
		// The answer to our own SUBSCRIBE (possibly resent by go-redis after a reconnect).
		s.confirmed = true
		s.gen = b.gen
		for _, w := range s.waiters {
			close(w)
		}
		s.waiters = nil
		b.mu.Unlock()
		return
	}
	// A confirmation nobody asked for: go-redis reconnected and resubscribed.
	resubscribed := s.gen == b.gen
	if resubscribed {
		b.gen++
	}
	s.gen = b.gen
	h := b.handler
	b.mu.Unlock()
	if resubscribed && h != nil {
		b.log.Warn("realtime: redis pubsub reconnected; clients catch up from history")
		h.HandleResubscribed()
	}
}
