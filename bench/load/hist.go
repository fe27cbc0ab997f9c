package main

import (
	"cmp"
	"math/bits"
	"slices"
	"sync/atomic"
	"time"
)

// hist is a lock-free latency histogram in microseconds with log-linear buckets: values
// below 256 µs are exact, larger ones fall into buckets 1/128 of their power of two wide
// (under 0.8% error), up to 2^31 µs (35 minutes). Record is safe from many goroutines.
type hist struct {
	counts [256 + 24*128]atomic.Uint64
	n      atomic.Uint64
	max    atomic.Int64
}

func bucketOf(us int64) int {
	if us < 256 {
		return int(max(us, 0))
	}
	e := bits.Len64(uint64(us)) - 8 // us>>e is in [128, 256)
	i := 256 + (e-1)*128 + int(us>>e) - 128
	return min(i, 256+24*128-1)
}

// upper returns the largest value of bucket i.
func upper(i int) int64 {
	if i < 256 {
		return int64(i)
	}
	e := (i-256)/128 + 1
	m := int64((i-256)%128 + 128)
	return (m+1)<<e - 1
}

// Record adds one latency.
func (h *hist) Record(d time.Duration) {
	us := d.Microseconds()
	h.counts[bucketOf(us)].Add(1)
	h.n.Add(1)
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			break
		}
	}
}

// Count is the number of recorded values.
func (h *hist) Count() uint64 { return h.n.Load() }

// Quantile returns the latency at q (0..1), as its bucket's upper bound.
func (h *hist) Quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(q*float64(n) + 0.5)
	rank = max(rank, 1)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			return time.Duration(min(upper(i), h.max.Load())) * time.Microsecond
		}
	}
	return h.Max()
}

// SumQuantile returns the q quantile (0..1) of X+Y, X drawn from h and Y from o
// independently: the exact convolution of the two histograms, at bucket upper bounds.
// E.g. the latency of a server that makes a statement like pgbench's (h) and then
// delivers like Centrifugo (o), doing nothing else.
func (h *hist) SumQuantile(o *hist, q float64) time.Duration {
	type bucket struct {
		us int64
		n  uint64
	}
	nonEmpty := func(h *hist) []bucket {
		var out []bucket
		for i := range h.counts {
			if n := h.counts[i].Load(); n > 0 {
				out = append(out, bucket{min(upper(i), h.max.Load()), n})
			}
		}
		return out
	}
	a, b := nonEmpty(h), nonEmpty(o)
	sums := make([]bucket, 0, len(a)*len(b))
	var total uint64
	for _, x := range a {
		for _, y := range b {
			sums = append(sums, bucket{x.us + y.us, x.n * y.n})
			total += x.n * y.n
		}
	}
	if total == 0 {
		return 0
	}
	slices.SortFunc(sums, func(x, y bucket) int { return cmp.Compare(x.us, y.us) })
	rank := max(uint64(q*float64(total)+0.5), 1)
	var seen uint64
	for _, s := range sums {
		if seen += s.n; seen >= rank {
			return time.Duration(s.us) * time.Microsecond
		}
	}
	return time.Duration(sums[len(sums)-1].us) * time.Microsecond
}

// Max returns the largest latency recorded.
func (h *hist) Max() time.Duration { return time.Duration(h.max.Load()) * time.Microsecond }

// Reset clears the histogram (not safe against concurrent Record calls).
func (h *hist) Reset() {
	for i := range h.counts {
		h.counts[i].Store(0)
	}
	h.n.Store(0)
	h.max.Store(0)
}
