package main

import (
	"testing"
	"time"
)

func TestBuckets(t *testing.T) {
	for _, us := range []int64{0, 1, 255, 256, 257, 1000, 4095, 4096, 99_999, 1 << 30} {
		i := bucketOf(us)
		if up := upper(i); up < us || float64(up-us) > 0.008*float64(us)+1 {
			t.Errorf("value %d: bucket %d has upper %d", us, i, up)
		}
		if i > 0 && upper(i-1) >= us {
			t.Errorf("value %d: previous bucket %d ends at %d", us, i-1, upper(i-1))
		}
	}
}

func TestQuantile(t *testing.T) {
	var h hist
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Millisecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {1, time.Second}} {
		got := h.Quantile(tc.q)
		if d := got - tc.want; d < 0 || d > tc.want/100 {
			t.Errorf("q%v = %v, want %v (+1%%)", tc.q, got, tc.want)
		}
	}
	if h.Max() != time.Second {
		t.Errorf("max = %v", h.Max())
	}
}

func TestSumQuantile(t *testing.T) {
	var x, y hist
	for range 50 {
		x.Record(10 * time.Microsecond)
		x.Record(20 * time.Microsecond)
	}
	for range 99 {
		y.Record(100 * time.Microsecond)
	}
	y.Record(200 * time.Microsecond)
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{ // 110 µs 4,950 times in 10,000, 120 µs 4,950, 210 µs 50, 220 µs 50
		{0.25, 110 * time.Microsecond}, {0.49, 110 * time.Microsecond}, {0.5, 120 * time.Microsecond},
		{0.99, 120 * time.Microsecond}, {0.995, 210 * time.Microsecond}, {1, 220 * time.Microsecond}} {
		if got := x.SumQuantile(&y, tc.q); got != tc.want {
			t.Errorf("q%v of the sum = %v, want %v", tc.q, got, tc.want)
		}
	}
}
