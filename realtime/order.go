package realtime

import (
	"cmp"
	"slices"
	"time"
)

// maxHeld bounds the publications a sequencer holds behind one gap; more releases them
// all (the sockets then read the log).
const maxHeld = 1024

// sequencer puts one user's sequenced publications back in seq order on this replica,
// before they reach the user's sockets.
//
// Events are published by the requests that committed them, on any replica, so the
// broker can hand them out of order: a publication with seq N+2 may arrive before N+1
// (measured under load: 12-15 % of one user's publications, the missing one a few ms
// to a few hundred ms later). A socket that saw N+2 after N would have to read the event
// log; with a thousand sockets of one user on a replica that is a thousand log reads
// per reordering. So the hub holds a publication that arrives after a gap, once per
// user rather than per socket, and releases it in order when the gap closes. A gap
// that stays open for Config.GapWait means a publication was really lost (a publish
// that failed, a replica that died between commit and publish): then everything held
// is released, the sockets see the gap and read the log, as before.
//
// The first seq is learned from the first socket's hello (start): everything after it
// is either published or in the log. Publications that arrive before it are held.
//
// A sequencer belongs to its user's hub entry (userEntry) and is used under that entry's
// mu, with the shard lock held: mu orders concurrent deliveries of one user.
type sequencer struct {
	known bool  // high is set
	high  int64 // highest seq handed on
	held  []Publication
	timer *time.Timer
	gen   uint64 // of timer: a stale timer's callback does nothing
}

// push hands p on through emit when it is the next seq, with whatever it unblocks,
// holds it when it comes after a gap, and drops it when it is not after high (a
// duplicate, or one given up on: the sockets read it from the log). It reports whether
// the gap timer must be armed.
func (s *sequencer) push(p Publication, emit func(Publication)) (arm bool) {
	if s.known && p.Seq <= s.high {
		return false
	}
	if s.known && p.Seq == s.high+1 {
		emit(p)
		s.high = p.Seq
		return s.release(emit)
	}
	i, found := slices.BinarySearchFunc(s.held, p.Seq, func(q Publication, seq int64) int { return cmp.Compare(q.Seq, seq) })
	if found {
		return false // the same publication twice
	}
	s.held = slices.Insert(s.held, i, p)
	if len(s.held) > maxHeld {
		s.flush(emit)
		return false
	}
	return s.timer == nil
}

// start sets the seq the user's sockets were greeted with, if none was known, and
// releases what it unblocks.
func (s *sequencer) start(seq int64, emit func(Publication)) (arm bool) {
	if s.known {
		return false
	}
	s.known, s.high = true, seq
	return s.release(emit)
}

// release hands on the held publications that follow high without a gap. It stops the
// timer when nothing is held any more, and asks for a fresh one when a gap closed but
// another remains (that gap gets the whole wait too).
func (s *sequencer) release(emit func(Publication)) (arm bool) {
	n := 0
	for ; n < len(s.held) && s.held[n].Seq <= s.high+1; n++ {
		if s.held[n].Seq > s.high { // held before start, some may be old
			emit(s.held[n])
			s.high = s.held[n].Seq
		}
	}
	if n == 0 {
		return false
	}
	s.held = slices.Delete(s.held, 0, n)
	s.stop()
	return len(s.held) > 0
}

// flush hands on everything held, in seq order: the gap before it is given up on.
// It returns how many publications it released.
func (s *sequencer) flush(emit func(Publication)) int {
	n := len(s.held)
	for _, p := range s.held {
		emit(p)
		s.high = max(s.high, p.Seq)
	}
	s.known = true
	s.held = s.held[:0]
	s.stop()
	return n
}

// arm starts a fresh gap timer: expired(gen) runs after wait, and should flush only if
// gen is still the sequencer's (no release or newer timer came since).
func (s *sequencer) arm(wait time.Duration, expired func(gen uint64)) {
	s.stop()
	gen := s.gen
	s.timer = time.AfterFunc(wait, func() { expired(gen) })
}

func (s *sequencer) stop() {
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	s.gen++
}
