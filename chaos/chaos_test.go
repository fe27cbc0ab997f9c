//go:build chaos

package chaos

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/evotodo/evo/store"
)

// TestChaos: the two-replica topology (the release binary, a private
// PostgreSQL cluster, a private Redis) under faults, with hundreds of
// sockets and a stream of changes through REST, MCP and chat. In turn:
// replica 1 is SIGKILLed and restarted; Redis is SIGKILLed and restarted;
// PostgreSQL is stopped (immediate: like a crash) for a few seconds and
// started; replica 2 is SIGKILLed and restarted; all along, random sockets
// are dropped (except while PostgreSQL is down, when no socket may close).
//
// At the end every socket's view (the todo events it received, resuming
// from its last seq on every reconnect) must equal its user's event log in
// the database: every event exactly once, in seq order. Every change the
// API reported as done must be in the log, once; every event in the log
// must be a change the workload asked for (at most once each).
//
// Settings: CHAOS_USERS (12), CHAOS_SOCKETS (sockets per user, 25),
// CHAOS_PAUSE (pause between one user's changes, 150ms), CHAOS_BIN (a
// prebuilt binary), CHAOS_RACE (build it with -race), CHAOS_KEEP (keep the
// run directory: logs of every process).
func TestChaos(t *testing.T) {
	nUsers := envInt("CHAOS_USERS", 12)
	perUser := envInt("CHAOS_SOCKETS", 25)
	pause := envDuration("CHAOS_PAUSE", 150*time.Millisecond)
	begin := time.Now()

	dir := runDir(t, "evo-chaos-")
	bin := buildEvo(t, dir)
	pg := startPG(t)
	rd := startRedis(t, dir)
	env := replicaEnv(dir, pg.URL(), rd.URL())
	reps := startReplicas(t, bin, dir, env)
	setup := time.Since(begin)
	users := newUsers(t, bin, env, nUsers, "chaos")

	// The sockets, spread over both replicas, live from seq 0.
	clientCtx, stopClients := context.WithCancel(context.Background())
	defer stopClients()
	var clientsWG sync.WaitGroup
	clients := startSockets(t, clientCtx, &clientsWG, users, nUsers*perUser, reps, 60*time.Second)
	drops := startDropper(clientCtx, clients, 250*time.Millisecond, 2)

	// The workload: one goroutine per user.
	w := newWorkload(users, reps)
	stopWork := w.start(t, pause)
	drops.enabled.Store(true)

	var timings []string
	lastNote := time.Now()
	note := func(format string, args ...any) {
		now := time.Now()
		closed := 0
		for _, c := range clients {
			closed += c.closesBetween(lastNote, now)
		}
		lastNote = now
		s := fmt.Sprintf("%6.1fs  ", time.Since(begin).Seconds()) + fmt.Sprintf(format, args...) +
			fmt.Sprintf("  [sockets closed by the server or the network since the last line: %d]", closed)
		timings = append(timings, s)
		t.Log(s)
	}
	steady := 8 * time.Second
	note("setup %v (build, PostgreSQL, Redis, replicas); %d sockets connected; workload started", setup.Round(time.Millisecond), len(clients))
	time.Sleep(steady)

	killReplica := func(i int) {
		r := reps[i]
		r.signal(syscall.SIGKILL, 10*time.Second)
		w.up[i].Store(false)
		note("%s SIGKILLed", r.name)
		time.Sleep(3 * time.Second)
		start := time.Now()
		r.start(t)
		r.waitReady(t, "/ready", 60*time.Second)
		w.up[i].Store(true)
		note("%s restarted, ready after %v", r.name, time.Since(start).Round(time.Millisecond))
		time.Sleep(steady)
	}

	// 1. A replica dies.
	killReplica(0)

	// 2. Redis dies and comes back (empty: it keeps nothing).
	rd.kill()
	note("Redis SIGKILLed")
	time.Sleep(3 * time.Second)
	rd.start(t)
	note("Redis restarted")
	time.Sleep(steady)

	// 3. PostgreSQL stops; the API answers 503, quickly; sockets stay open.
	drops.enabled.Store(false)
	time.Sleep(500 * time.Millisecond) // let dropped sockets reconnect
	probe := &prober{users: users, replicas: reps}
	probeCtx, stopProbe := context.WithCancel(context.Background())
	var probeWG sync.WaitGroup
	probeWG.Add(1)
	go probe.run(probeCtx, &probeWG)
	pgStop := time.Now()
	pg.stop(t)
	probe.from = time.Now()
	note("PostgreSQL stopped (immediate)")
	time.Sleep(5 * time.Second)
	pgStart := time.Now()
	probe.to = pgStart
	pg.start(t)
	note("PostgreSQL started after %v down", pgStart.Sub(pgStop).Round(time.Millisecond))
	recovered := probe.waitRecovered(t, pgStart, 60*time.Second)
	note("API answering 200 again %v after PostgreSQL started", recovered.Sub(pgStart).Round(time.Millisecond))
	stopProbe()
	probeWG.Wait()
	closedDuringOutage := 0
	for _, c := range clients {
		closedDuringOutage += c.closesBetween(pgStop, recovered)
	}
	drops.enabled.Store(true)
	time.Sleep(steady)

	// 4. The other replica dies.
	killReplica(1)

	// The end: stop changing, let every socket catch up with the log.
	drops.enabled.Store(false)
	stopWork()
	note("workload stopped")
	logs := readLogs(t, pg.URL(), users)
	drainStart := time.Now()
	waitLevel(clients, logs, 60*time.Second)
	note("sockets level with the log %v after the workload stopped", time.Since(drainStart).Round(time.Millisecond))
	stopClients()
	clientsWG.Wait()

	// Verification.
	v := verify(t, w, users, clients, logs)
	if lag := lagging(clients, logs); len(lag) > 0 {
		t.Errorf("%d sockets never caught up, e.g. %s", len(lag), lag[0])
	}

	// Counts.
	connects, replayed, delivered, dialErrors, unexpected := 0, 0, 0, 0, 0
	why := map[string]int{}
	for _, c := range clients {
		for k, n := range c.why {
			why[k] += n
		}
		connects += c.connects
		replayed += c.replayed
		delivered += len(c.got) + c.dups
		dialErrors += c.dialErrors
		unexpected += len(c.closes)
	}
	bySurface := map[string][2]int{}
	for _, a := range w.attempts {
		n := bySurface[a.surface+" "+a.kind]
		n[0]++
		if a.committed {
			n[1]++
		}
		bySurface[a.surface+" "+a.kind] = n
	}
	var surfaces []string
	for k, n := range bySurface {
		surfaces = append(surfaces, fmt.Sprintf("%s %d/%d", k, n[1], n[0]))
	}
	sort.Strings(surfaces)
	events := 0
	for _, evs := range logs {
		events += len(evs)
	}
	report := []string{
		fmt.Sprintf("users %d, sockets %d (%d per user, over 2 replicas), duration %v", nUsers, len(clients), perUser, time.Since(begin).Round(time.Second)),
		fmt.Sprintf("changes made: %d committed of %d attempted (%s)", v.committed, len(w.attempts), strings.Join(surfaces, ", ")),
		fmt.Sprintf("events in the log: %d; of attempts with no or a failed answer, %d committed anyway", events, v.unknownApplied),
		fmt.Sprintf("events delivered: %d (to %d sockets; %d via replay on resume)", delivered, len(clients), replayed),
		fmt.Sprintf("reconnects: %d (random drops %d; closed by the server or the network %d: %v; failed dials %d)", connects-len(clients), drops.drops.Load(), unexpected, why, dialErrors),
		fmt.Sprintf("losses: %d", v.losses),
		fmt.Sprintf("duplicates: %d", v.dups),
		fmt.Sprintf("out of order: %d, resyncs: %d", v.gaps, v.resyncs),
		fmt.Sprintf("committed but not in the log: %d; in the log but never attempted (or applied twice): %d", v.lost, v.phantom),
		fmt.Sprintf("HTTP statuses: %v; transport errors: %v", w.statuses, w.errors),
		fmt.Sprintf("PostgreSQL down: %d probes, statuses %v, slowest answer %v; sockets closed meanwhile: %d", probe.count(), probe.statuses(), probe.slowest().Round(time.Millisecond), closedDuringOutage),
	}
	fmt.Println("\n=== chaos: counts")
	for _, s := range report {
		fmt.Println("  " + s)
	}
	fmt.Println("=== chaos: timeline")
	for _, s := range timings {
		fmt.Println("  " + s)
	}

	for _, b := range w.bad {
		t.Errorf("API contract: %s", b)
	}
	if closedDuringOutage > 0 {
		t.Errorf("%d sockets closed while PostgreSQL was down", closedDuringOutage)
	}
	probe.check(t)
	if v.committed == 0 || delivered == 0 {
		t.Errorf("nothing happened: %d committed, %d delivered", v.committed, delivered)
	}
}

// --- PostgreSQL outage probes ---

// prober asks each replica for a user's list every 200 ms.
type prober struct {
	users    []*chaosUser
	replicas []*replica
	from, to time.Time // PostgreSQL was down: after its stop returned, before its start began
	mu       sync.Mutex
	answers  []probeAnswer
}

type probeAnswer struct {
	at      time.Time
	replica int
	status  int
	took    time.Duration
	err     string
}

func (p *prober) run(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	c := &http.Client{Timeout: 20 * time.Second}
	for ctx.Err() == nil {
		for i, r := range p.replicas {
			u := p.users[rand.IntN(len(p.users))]
			req, _ := http.NewRequest("GET", r.URL()+"/api/todos?limit=1", nil)
			req.Header.Set("Authorization", "Bearer "+u.token)
			start := time.Now()
			resp, err := c.Do(req)
			a := probeAnswer{at: start, replica: i, took: time.Since(start)}
			if err != nil {
				a.err = err.Error()
			} else {
				a.status = resp.StatusCode
				resp.Body.Close()
			}
			p.mu.Lock()
			p.answers = append(p.answers, a)
			p.mu.Unlock()
		}
		sleep(ctx, 200*time.Millisecond)
	}
}

// waitRecovered waits until every replica answered 200 to a probe sent
// after since, and returns when the last of them was sent.
func (p *prober) waitRecovered(t *testing.T, since time.Time, within time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		ok := map[int]time.Time{}
		for _, a := range p.answers {
			if a.at.After(since) && a.status == http.StatusOK {
				if _, seen := ok[a.replica]; !seen {
					ok[a.replica] = a.at.Add(a.took)
				}
			}
		}
		p.mu.Unlock()
		if len(ok) == len(p.replicas) {
			var last time.Time
			for _, at := range ok {
				if at.After(last) {
					last = at
				}
			}
			return last
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the API did not answer 200 within %v of PostgreSQL starting", within)
	return time.Time{}
}

// during returns the answers to probes sent while PostgreSQL was down.
func (p *prober) during(from, to time.Time) []probeAnswer {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []probeAnswer
	for _, a := range p.answers {
		if a.at.After(from) && a.at.Add(a.took).Before(to) {
			out = append(out, a)
		}
	}
	return out
}

func (p *prober) count() int { return len(p.during(p.from, p.to)) }

func (p *prober) statuses() map[int]int {
	m := map[int]int{}
	for _, a := range p.during(p.from, p.to) {
		m[a.status]++
	}
	return m
}

func (p *prober) slowest() time.Duration {
	var d time.Duration
	for _, a := range p.during(p.from, p.to) {
		d = max(d, a.took)
	}
	return d
}

// check: while PostgreSQL was down (after its stop returned, before its
// start began), every probe was answered 503 within the bound.
func (p *prober) check(t *testing.T) {
	t.Helper()
	const bound = 6 * time.Second
	answers := p.during(p.from, p.to)
	if len(answers) < 4 {
		t.Errorf("only %d probes while PostgreSQL was down", len(answers))
	}
	for _, a := range answers {
		if a.status != http.StatusServiceUnavailable || a.took > bound {
			t.Errorf("probe of replica %d while PostgreSQL was down: status %d %s after %v, want 503 within %v",
				a.replica+1, a.status, a.err, a.took, bound)
		}
	}
}

// --- verification ---

type verdict struct {
	committed      int // changes the API reported as done
	unknownApplied int // changes with no or a failed answer that are in the log
	losses         int // log events a socket did not receive
	dups           int // events a socket received twice
	gaps           int // events a socket received out of order
	resyncs        int
	lost           int // committed changes missing from the log
	phantom        int // log events no attempt explains
}

// verify compares the attempts and the sockets' views with the logs.
func verify(t *testing.T, w *workload, users []*chaosUser, clients []*sockClient, logs map[string][]store.Event) verdict {
	t.Helper()
	var v verdict
	errorf := func(counter *int, format string, args ...any) {
		*counter++
		if *counter <= 10 {
			t.Errorf(format, args...)
		}
	}
	byUser := map[*chaosUser][]*attempt{}
	for _, a := range w.attempts {
		byUser[a.user] = append(byUser[a.user], a)
		if a.committed {
			v.committed++
		}
	}
	for _, u := range users {
		evs := logs[u.id]
		for i, ev := range evs {
			if ev.Seq != int64(i+1) || ev.Todo.UserID != u.id {
				t.Fatalf("user %s: log event %d has seq %d of user %s", u.id, i, ev.Seq, ev.Todo.UserID)
			}
		}
		// What was asked for.
		creates := map[string][]*attempt{}  // by title
		renames := map[string]int{}         // id|title -> attempts
		toggles := map[string]int{}         // id -> attempts
		deletes := map[string]int{}         // id -> attempts
		toggleDone := map[string]int{}      // id|complete -> committed
		restToggle := map[string][]string{} // id -> updated_at answered
		for _, a := range byUser[u] {
			switch a.kind {
			case kindCreate:
				creates[a.title] = append(creates[a.title], a)
			case kindRename:
				renames[a.todoID+"|"+a.title]++
			case kindToggle:
				toggles[a.todoID]++
				if a.committed {
					toggleDone[a.todoID+"|"+strconv.FormatBool(a.complete)]++
					if a.updatedAt != "" {
						restToggle[a.todoID] = append(restToggle[a.todoID], a.updatedAt)
					}
				}
			case kindDelete:
				deletes[a.todoID]++
			}
		}
		// What the log says happened, todo by todo.
		type state struct {
			title    string
			complete bool
		}
		todos := map[string]*state{}
		created := map[string]string{} // title -> id
		renamed := map[string]int{}
		toggled := map[string]int{}
		toggledTo := map[string]int{}
		deleted := map[string]int{}
		updatedAt := map[string][]time.Time{}
		for _, ev := range evs {
			id := ev.Todo.ID
			switch ev.Type {
			case store.EventTodoCreated:
				if len(creates[ev.Todo.Title]) == 0 {
					errorf(&v.phantom, "user %s: seq %d creates %q, which no attempt asked for", u.id, ev.Seq, ev.Todo.Title)
				}
				if _, dup := created[ev.Todo.Title]; dup {
					errorf(&v.phantom, "user %s: seq %d creates %q a second time", u.id, ev.Seq, ev.Todo.Title)
				}
				created[ev.Todo.Title] = id
				todos[id] = &state{ev.Todo.Title, ev.Todo.IsComplete}
			case store.EventTodoUpdated:
				s := todos[id]
				if s == nil {
					errorf(&v.phantom, "user %s: seq %d updates %s, which the log never created (or deleted)", u.id, ev.Seq, id)
					continue
				}
				if ev.Todo.Title != s.title {
					renamed[id+"|"+ev.Todo.Title]++
				} else {
					toggled[id]++
					toggledTo[id+"|"+strconv.FormatBool(ev.Todo.IsComplete)]++
				}
				s.title, s.complete = ev.Todo.Title, ev.Todo.IsComplete
				updatedAt[id] = append(updatedAt[id], ev.Todo.UpdatedAt)
			case store.EventTodoDeleted:
				deleted[id]++
				if todos[id] == nil {
					errorf(&v.phantom, "user %s: seq %d deletes %s, which the log never created (or deleted)", u.id, ev.Seq, id)
				}
				delete(todos, id)
			}
		}
		// Every event was asked for, and applied at most once...
		for k, n := range renamed {
			if n > renames[k] {
				errorf(&v.phantom, "user %s: rename %s is in the log %d times, asked %d", u.id, k, n, renames[k])
			}
		}
		for id, n := range toggled {
			if n > toggles[id] {
				errorf(&v.phantom, "user %s: %d completion changes of %s in the log, %d asked", u.id, n, id, toggles[id])
			}
		}
		for id, n := range deleted {
			if n > 1 || deletes[id] == 0 {
				errorf(&v.phantom, "user %s: %s deleted %d times in the log, %d asked", u.id, id, n, deletes[id])
			}
		}
		// ...and every change reported as done is there.
		for _, a := range byUser[u] {
			in := false
			switch a.kind {
			case kindCreate:
				id, ok := created[a.title]
				in = ok
				if a.committed && ok && id != a.todoID {
					errorf(&v.lost, "user %s: create %q answered id %s, the log has %s", u.id, a.title, a.todoID, id)
				}
			case kindRename:
				in = renamed[a.todoID+"|"+a.title] > 0
			case kindToggle:
				k := a.todoID + "|" + strconv.FormatBool(a.complete)
				in = toggledTo[k] >= toggleDone[k] && toggledTo[k] > 0
			case kindDelete:
				in = deleted[a.todoID] > 0
			}
			switch {
			case a.committed && !in:
				errorf(&v.lost, "user %s: %s %s %+v was answered %d (done) but is not in the log", u.id, a.surface, a.kind, *a, a.status)
			case !a.committed && in && a.kind != kindToggle:
				v.unknownApplied++
			}
		}
		for id, ats := range restToggle {
			for _, at := range ats {
				want, err := time.Parse(time.RFC3339Nano, at)
				if err != nil || !slices.ContainsFunc(updatedAt[id], want.Equal) {
					errorf(&v.lost, "user %s: PATCH of %s answered updated_at %s, no event of the log has it", u.id, id, at)
				}
			}
		}
	}
	// Every socket saw its user's log: each event once, in order.
	for _, c := range clients {
		evs := logs[c.user.id]
		c.mu.Lock()
		v.dups += c.dups
		v.gaps += len(c.gaps)
		v.resyncs += c.resyncs
		for _, g := range c.gaps {
			errorf(new(int), "socket %d: out of order or foreign: %s", c.id, g)
		}
		if c.dups > 0 {
			errorf(new(int), "socket %d received %d events twice", c.id, c.dups)
		}
		got := c.got
		c.mu.Unlock()
		missing := len(evs) - len(got)
		for i, e := range got {
			if i >= len(evs) {
				errorf(new(int), "socket %d received seq %d beyond the log's %d", c.id, e.Seq, len(evs))
				break
			}
			ev := evs[i]
			at, _ := time.Parse(time.RFC3339Nano, e.At)
			if e.Seq != ev.Seq || e.Type != ev.Type || e.ID != ev.Todo.ID || !at.Equal(ev.Todo.UpdatedAt) {
				errorf(new(int), "socket %d: event %d is %+v, the log has seq %d %s %s %s", c.id, i, e, ev.Seq, ev.Type, ev.Todo.ID, ev.Todo.UpdatedAt)
				missing++
				break
			}
		}
		if missing > 0 {
			v.losses += missing
			errorf(new(int), "socket %d (user %s) is missing %d of %d events", c.id, c.user.id, missing, len(evs))
		}
	}
	if v.losses > 0 || v.dups > 0 || v.gaps > 0 || v.resyncs > 0 {
		t.Errorf("sockets: %d losses, %d duplicates, %d out of order, %d resyncs", v.losses, v.dups, v.gaps, v.resyncs)
	}
	return v
}

// --- helpers ---

func subject(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q", token)
	}
	data, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Sub string `json:"sub"`
	}
	if err := json.Unmarshal(data, &c); err != nil || c.Sub == "" {
		t.Fatalf("token claims %s: %v", data, err)
	}
	return c.Sub
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}
