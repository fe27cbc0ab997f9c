package realtime

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestSequencerOrders: whatever order a user's publications arrive in, the sequencer
// hands each on exactly once, in seq order, without giving up on a gap.
func TestSequencerOrders(t *testing.T) {
	for trial := range 200 {
		r := rand.New(rand.NewPCG(uint64(trial), 7))
		n := 1 + r.IntN(300)
		start := int64(r.IntN(5))
		in := make([]Publication, n)
		for i := range in {
			in[i] = Publication{Seq: start + 1 + int64(i)}
		}
		// Displace each publication by at most 20 places, as the broker does.
		for i := range in {
			j := min(n-1, i+r.IntN(20))
			in[i], in[j] = in[j], in[i]
		}
		var s sequencer
		var out []int64
		emit := func(p Publication) { out = append(out, p.Seq) }
		s.start(start, emit)
		for i, p := range in {
			s.push(p, emit)
			if i%7 == 0 { // some arrive twice
				s.push(p, emit)
			}
		}
		if want := span(start+1, start+int64(n)); !slices.Equal(out, want) {
			t.Fatalf("trial %d: handed on %s, want %s in order", trial, abbreviate(out), abbreviate(want))
		}
		if len(s.held) != 0 || s.timer != nil {
			t.Fatalf("trial %d: %d still held, timer %v", trial, len(s.held), s.timer)
		}
	}
}

// TestSequencerHoldsUntilStartOrFlush: before the first hello nothing goes out; a gap
// keeps what follows it until the gap closes or is given up on; the timer is asked for
// exactly when something is held with no timer running.
func TestSequencerHoldsUntilStartOrFlush(t *testing.T) {
	var s sequencer
	var out []int64
	emit := func(p Publication) { out = append(out, p.Seq) }
	arm := func(want bool, got bool) {
		t.Helper()
		if got != want {
			t.Fatalf("arm = %v, want %v", got, want)
		}
		if got {
			s.arm(time.Hour, func(uint64) {})
		}
	}
	arm(true, s.push(Publication{Seq: 12}, emit)) // before hello: held
	arm(false, s.push(Publication{Seq: 11}, emit))
	arm(false, s.start(10, emit))
	checkSeqs(t, out, []int64{11, 12})
	if s.timer != nil {
		t.Fatal("timer still armed with nothing held")
	}
	arm(true, s.push(Publication{Seq: 15}, emit)) // 13 and 14 missing
	arm(false, s.push(Publication{Seq: 16}, emit))
	arm(false, s.push(Publication{Seq: 13}, emit)) // the same gap, still open: same wait
	arm(false, s.push(Publication{Seq: 18}, emit))
	arm(true, s.push(Publication{Seq: 14}, emit)) // gap closed; 17 missing: a fresh wait
	checkSeqs(t, out, []int64{11, 12, 13, 14, 15, 16})
	gen := s.gen
	if n := s.flush(emit); n != 1 || s.gen == gen || s.timer != nil {
		t.Fatalf("flush released %d (want 1), gen %d -> %d, timer %v", n, gen, s.gen, s.timer)
	}
	checkSeqs(t, out, []int64{11, 12, 13, 14, 15, 16, 18})
	arm(false, s.push(Publication{Seq: 17}, emit)) // too late: the sockets read it from the log
	arm(false, s.push(Publication{Seq: 19}, emit))
	checkSeqs(t, out, []int64{11, 12, 13, 14, 15, 16, 18, 19})

	for i := range maxHeld + 1 { // too many behind one gap: all released
		s.push(Publication{Seq: 21 + int64(i)}, emit)
	}
	if len(s.held) != 0 || out[len(out)-1] != 21+maxHeld {
		t.Fatalf("held %d after %d publications behind a gap", len(s.held), maxHeld+1)
	}
}
