package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// observer subscribes to the users' Redis channels next to the replicas and checks the
// order in which Redis hands out the publications (8-byte big-endian seq, then the
// frame; realtime/broker.go). Redis sends every subscriber the same order, so a
// publication that arrives after a later one here arrived so at every replica, where
// each socket of its user sees a gap and reads the event log to catch up.
type observer struct {
	client *redis.Client
	ps     *redis.PubSub
	done   chan struct{}

	last    map[string]int64           // by channel; only the read goroutine touches it
	missing map[string]map[int64]int64 // seqs skipped by a gap, by channel: when the gap was seen
	late    hist                       // how long after the gap the missing seq came

	msgs   atomic.Int64
	gaps   atomic.Int64 // seq > last+1: the next one is late
	resets atomic.Bool
}

func observeRedis(ctx context.Context, url, prefix string, users []benchUser) (*observer, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("-redis-url: %w", err)
	}
	o := &observer{client: redis.NewClient(opts), done: make(chan struct{}), last: map[string]int64{}, missing: map[string]map[int64]int64{}}
	chans := make([]string, 0, len(users))
	for _, u := range users {
		chans = append(chans, prefix+"user:"+u.ID)
	}
	o.ps = o.client.Subscribe(ctx)
	for i := 0; i < len(chans); i += 1000 {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := o.ps.Subscribe(sctx, chans[i:min(i+1000, len(chans))]...)
		cancel()
		if err != nil {
			o.Close()
			return nil, fmt.Errorf("observe Redis: %w", err)
		}
	}
	ch := o.ps.Channel(redis.WithChannelSize(1 << 16))
	go func() {
		defer close(o.done)
		for m := range ch {
			if len(m.Payload) < 8 {
				continue
			}
			if o.resets.Swap(false) {
				clear(o.last)
				clear(o.missing)
				o.late.Reset()
			}
			now := since()
			seq := int64(binary.BigEndian.Uint64([]byte(m.Payload[:8])))
			o.msgs.Add(1)
			last, seen := o.last[m.Channel]
			switch {
			case !seen || seq == last+1:
			case seq > last+1:
				o.gaps.Add(1)
				miss := o.missing[m.Channel]
				if miss == nil {
					miss = map[int64]int64{}
					o.missing[m.Channel] = miss
				}
				for s := last + 1; s < seq && len(miss) < 100000; s++ {
					miss[s] = now
				}
			case seq < last:
				if t, ok := o.missing[m.Channel][seq]; ok {
					o.late.Record(time.Duration(now - t))
					delete(o.missing[m.Channel], seq)
				}
				continue
			}
			o.last[m.Channel] = max(seq, last)
		}
	}()
	return o, nil
}

// reset zeroes the counters for a new window.
func (o *observer) reset() {
	o.msgs.Store(0)
	o.gaps.Store(0)
	o.resets.Store(true)
}

func (o *observer) Close() {
	o.ps.Close()
	if o.done != nil {
		select {
		case <-o.done:
		case <-time.After(5 * time.Second):
		}
	}
	o.client.Close()
}
