package realtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recorder is a BrokerEventHandler keeping what it is given.
type recorder struct {
	pubs   chan recorded
	resubs atomic.Int32
}

type recorded struct {
	channel string
	data    []byte
}

func newRecorder() *recorder { return &recorder{pubs: make(chan recorded, 1024)} }

func (r *recorder) HandlePublication(channel string, data []byte) {
	r.pubs <- recorded{channel, bytes.Clone(data)}
}

func (r *recorder) HandleResubscribed() { r.resubs.Add(1) }

func (r *recorder) expect(t testing.TB, channel string, data []byte) {
	t.Helper()
	select {
	case got := <-r.pubs:
		if got.channel != channel || !bytes.Equal(got.data, data) {
			t.Fatalf("got %s %q, want %s %q", got.channel, got.data, channel, data)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no publication on %s", channel)
	}
}

func (r *recorder) expectNone(t testing.TB, within time.Duration) {
	t.Helper()
	select {
	case got := <-r.pubs:
		t.Fatalf("unexpected publication %s %q", got.channel, got.data)
	case <-time.After(within):
	}
}

// brokerBackends builds a broker of each kind, with its handler registered.
var brokerBackends = []struct {
	name string
	new  func(t testing.TB, h BrokerEventHandler) Broker
}{
	{"memory", func(t testing.TB, h BrokerEventHandler) Broker {
		b := NewMemoryBroker()
		b.RegisterEventHandler(h)
		return b
	}},
	{"redis", func(t testing.TB, h BrokerEventHandler) Broker {
		b := newRedisBroker(t, newRedisClient(t, "evotest-broker"), uniquePrefix())
		b.RegisterEventHandler(h)
		return b
	}},
}

func TestBroker(t *testing.T) {
	ctx := context.Background()
	for _, bk := range brokerBackends {
		t.Run(bk.name, func(t *testing.T) {
			t.Run("PublishRightAfterSubscribe", func(t *testing.T) {
				r := newRecorder()
				b := bk.new(t, r)
				for i := range 50 {
					ch := fmt.Sprintf("user:u%d", i)
					if err := b.Subscribe(ctx, ch); err != nil {
						t.Fatal(err)
					}
					data := []byte(fmt.Sprintf("m%d\x00\xff", i))
					if err := b.Publish(ctx, ch, data); err != nil {
						t.Fatal(err)
					}
					r.expect(t, ch, data)
				}
			})
			t.Run("UnsubscribedNotDelivered", func(t *testing.T) {
				r := newRecorder()
				b := bk.new(t, r)
				if err := b.Subscribe(ctx, "user:a", "user:b"); err != nil {
					t.Fatal(err)
				}
				if err := b.Unsubscribe(ctx, "user:a"); err != nil {
					t.Fatal(err)
				}
				if err := b.Publish(ctx, "user:a", []byte("x")); err != nil {
					t.Fatal(err)
				}
				if err := b.Publish(ctx, "user:b", []byte("y")); err != nil {
					t.Fatal(err)
				}
				r.expect(t, "user:b", []byte("y"))
				r.expectNone(t, 100*time.Millisecond)
			})
			t.Run("PublicationRoundTrip", func(t *testing.T) {
				r := newRecorder()
				b := bk.new(t, r)
				if err := b.Subscribe(ctx, "user:a"); err != nil {
					t.Fatal(err)
				}
				for _, p := range []Publication{{Seq: 0, Data: []byte(`{"type":"chat.token"}`)}, {Seq: 1<<40 + 7, Data: []byte(`{}`)}, {Seq: 3}} {
					if err := b.Publish(ctx, "user:a", encodePublication(p)); err != nil {
						t.Fatal(err)
					}
					got := <-r.pubs
					dp, err := decodePublication(got.data)
					if err != nil || dp.Seq != p.Seq || !bytes.Equal(dp.Data, p.Data) {
						t.Fatalf("got %+v, %v; want %+v", dp, err, p)
					}
				}
				if _, err := decodePublication([]byte("short")); err == nil {
					t.Fatal("short publication decoded")
				}
			})
		})
	}
}

func TestRedisBroker(t *testing.T) {
	ctx := context.Background()
	t.Run("ResubscribedOncePerReconnect", func(t *testing.T) {
		name := "evotest-resub-" + strings.Trim(uniquePrefix(), ":")
		name = strings.ReplaceAll(name, ":", "-")
		client := newRedisClient(t, name)
		r := newRecorder()
		b := newRedisBroker(t, client, uniquePrefix())
		b.RegisterEventHandler(r)
		if err := b.Subscribe(ctx, "user:a", "user:b", "user:c"); err != nil {
			t.Fatal(err)
		}
		for round := int32(1); round <= 2; round++ {
			if n := killPubSub(t, client, name); n != 1 {
				t.Fatalf("killed %d pubsub connections, want 1", n)
			}
			waitFor(t, "resubscription", func() bool { return r.resubs.Load() >= round })
			time.Sleep(200 * time.Millisecond)
			if got := r.resubs.Load(); got != round {
				t.Fatalf("HandleResubscribed called %d times after %d reconnects", got, round)
			}
			if err := b.Publish(ctx, "user:b", []byte("after")); err != nil {
				t.Fatal(err)
			}
			r.expect(t, "user:b", []byte("after"))
		}
		// A channel subscribed after the reconnects is confirmed, not taken for one.
		if err := b.Subscribe(ctx, "user:d"); err != nil {
			t.Fatal(err)
		}
		if got := r.resubs.Load(); got != 2 {
			t.Fatalf("HandleResubscribed called %d times, want 2", got)
		}
	})
	t.Run("SubscribeAfterClose", func(t *testing.T) {
		b := newRedisBroker(t, newRedisClient(t, "evotest-broker"), uniquePrefix())
		b.RegisterEventHandler(newRecorder())
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if err := b.Close(); err != nil { // idempotent
			t.Fatal(err)
		}
		if err := b.Subscribe(ctx, "user:a"); err == nil {
			t.Fatal("Subscribe after Close succeeded")
		}
	})
	t.Run("SubscribeCancelled", func(t *testing.T) {
		b := newRedisBroker(t, newRedisClient(t, "evotest-broker"), uniquePrefix())
		b.RegisterEventHandler(newRecorder())
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := b.Subscribe(cctx, "user:a"); err == nil {
			t.Fatal("Subscribe with a cancelled context succeeded")
		}
		if err := b.Subscribe(ctx, "user:a"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("NilClient", func(t *testing.T) {
		if _, err := NewRedisBroker(nil, "p:", nil); err == nil {
			t.Fatal("NewRedisBroker(nil) succeeded")
		}
	})
}

// TestRedisBrokerPublishAsync: publications made from many goroutines, handed over
// without waiting (PublishAsync) or waited for (Publish), reach a subscriber on
// another broker each once and, per channel, in the order they were made; Close sends
// what is still queued before it returns.
func TestRedisBrokerPublishAsync(t *testing.T) {
	ctx := context.Background()
	prefix := uniquePrefix()
	r := newRecorder()
	r.pubs = make(chan recorded, 20_000)
	sub := newRedisBroker(t, newRedisClient(t, "evotest-async-sub"), prefix)
	sub.RegisterEventHandler(r)
	const writers, each = 16, 500
	var channels []string
	for w := range writers {
		channels = append(channels, fmt.Sprintf("user:w%d", w))
	}
	if err := sub.Subscribe(ctx, channels...); err != nil {
		t.Fatal(err)
	}
	pub, err := NewRedisBroker(newRedisClient(t, "evotest-async-pub"), prefix, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var failed atomic.Int64
	for _, ch := range channels {
		wg.Go(func() {
			for i := range each {
				data := []byte(fmt.Sprintf("%d", i))
				if i%10 == 9 {
					if err := pub.Publish(ctx, ch, data); err != nil {
						failed.Add(1)
					}
					continue
				}
				pub.PublishAsync(ch, data, func(err error) {
					if err != nil {
						failed.Add(1)
					}
				})
			}
		})
	}
	wg.Wait()
	if err := pub.Close(); err != nil { // the async ones still queued go out first
		t.Fatal(err)
	}
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d publishes failed", n)
	}
	next := map[string]int{}
	for range writers * each {
		select {
		case got := <-r.pubs:
			if want := fmt.Sprint(next[got.channel]); string(got.data) != want {
				t.Fatalf("%s: got %s, want %s (every publication once, in order)", got.channel, got.data, want)
			}
			next[got.channel]++
		case <-time.After(10 * time.Second):
			t.Fatalf("received %v of %d per channel", next, each)
		}
	}
	pub.PublishAsync("user:w0", []byte("late"), func(err error) {
		if !errors.Is(err, ErrBrokerClosed) {
			t.Errorf("PublishAsync after Close: %v, want ErrBrokerClosed", err)
		}
	})
}
