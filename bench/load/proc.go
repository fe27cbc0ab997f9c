package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Linux /proc readers: the servers' resident memory, CPU time per process group, and
// the pid listening on a port.

// clkTck is USER_HZ, the unit of utime and stime in /proc/<pid>/stat (100 on Linux).
const clkTck = 100

// raiseNofile lifts RLIMIT_NOFILE to its hard limit and returns the new soft limit.
func raiseNofile() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	return lim.Cur, nil
}

// rssKB returns VmRSS of pid in KiB.
func rssKB(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// nofileLimit returns the soft "Max open files" of pid.
func nofileLimit(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return "?"
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if strings.HasPrefix(line, "Max open files") {
			if f := strings.Fields(line); len(f) >= 4 {
				return f[3]
			}
		}
	}
	return "?"
}

// procStat is what we read of /proc/<pid>/stat.
type procStat struct {
	comm string
	cpu  time.Duration // utime + stime
}

func readStat(pid int) (procStat, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// pid (comm) state ppid ... ; comm may contain spaces and parentheses.
	open, end := bytes.IndexByte(data, '('), bytes.LastIndexByte(data, ')')
	if open < 0 || end < open {
		return procStat{}, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	f := strings.Fields(string(data[end+2:]))
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return procStat{comm: string(data[open+1 : end]), cpu: time.Duration(utime+stime) * time.Second / clkTck}, nil
}

// cpuGroups maps a process to its group: the server pids by name, the others by comm.
type cpuGroups struct {
	servers map[int]string // pid -> "evo1", "evo2" (or "centrifugo1", ...)
	self    int
}

func (g cpuGroups) group(pid int, comm string) string {
	if name, ok := g.servers[pid]; ok {
		return name
	}
	if pid == g.self {
		return "load"
	}
	switch {
	case comm == "postgres":
		return "postgres"
	case strings.HasPrefix(comm, "redis-server"):
		return "redis"
	case comm == "nginx":
		return "nginx"
	case comm == "pgbench":
		return "pgbench"
	}
	return ""
}

// cpuTracker polls /proc every 250ms and keeps the last CPU time seen of every process
// of a group, so that processes that live only during a window (pgbench and its
// PostgreSQL backends) are counted too (up to the last poll before they exit).
type cpuTracker struct {
	g    cpuGroups
	stop chan struct{}
	done chan struct{}

	mu   sync.Mutex
	last map[int]pidCPU
	busy time.Duration
}

type pidCPU struct {
	group string
	cpu   time.Duration
}

func newCPUTracker(g cpuGroups) *cpuTracker {
	t := &cpuTracker{g: g, stop: make(chan struct{}), done: make(chan struct{}), last: map[int]pidCPU{}}
	t.poll()
	go func() {
		defer close(t.done)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-t.stop:
				return
			case <-tick.C:
				t.poll()
			}
		}
	}()
	return t
}

func (t *cpuTracker) Close() {
	close(t.stop)
	<-t.done
}

func (t *cpuTracker) poll() {
	seen := map[int]pidCPU{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil {
			continue
		}
		if name := t.g.group(pid, st.comm); name != "" {
			seen[pid] = pidCPU{name, st.cpu}
		}
	}
	busy := machineBusy()
	t.mu.Lock()
	for pid, c := range seen {
		t.last[pid] = c
	}
	t.busy = busy
	t.mu.Unlock()
}

// cpuSample is the tracker's state at one time.
type cpuSample struct {
	at   time.Time
	pids map[int]pidCPU
	busy time.Duration
}

// sample polls now and returns the CPU time seen so far of every process.
func (t *cpuTracker) sample() cpuSample {
	t.poll()
	t.mu.Lock()
	defer t.mu.Unlock()
	s := cpuSample{at: time.Now(), pids: make(map[int]pidCPU, len(t.last)), busy: t.busy}
	for pid, c := range t.last {
		s.pids[pid] = c
	}
	return s
}

// machineBusy is the busy time of all CPUs since boot (user+nice+system+irq+softirq+steal).
func machineBusy() time.Duration {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0
	}
	fields := strings.Fields(sc.Text()) // cpu user nice system idle iowait irq softirq steal ...
	var busy int64
	for i, v := range fields[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait, guest
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * time.Second / clkTck
}

// cpuUse is the CPU used between two samples, in cores (CPU seconds per second).
type cpuUse map[string]float64

func usage(a, b cpuSample) cpuUse {
	wall := b.at.Sub(a.at).Seconds()
	u := cpuUse{}
	var known time.Duration
	for pid, c := range b.pids {
		d := c.cpu - a.pids[pid].cpu // a process born in the window starts at 0
		if d < 0 {
			d = 0
		}
		known += d
		u[c.group] += d.Seconds() / wall
	}
	u["total"] = (b.busy - a.busy).Seconds() / wall
	u["other"] = max(0, (b.busy-a.busy-known).Seconds()/wall)
	return u
}

// String lists the groups that used at least 0.01 core, biggest first.
func (u cpuUse) String() string {
	order := []string{"evo1", "evo2", "centrifugo1", "centrifugo2", "postgres", "redis", "nginx", "pgbench", "load", "other"}
	var parts []string
	for _, k := range order {
		if v, ok := u[k]; ok && v >= 0.01 {
			parts = append(parts, fmt.Sprintf("%s %.2f", k, v))
		}
	}
	return strings.Join(parts, ", ") + fmt.Sprintf(" (total %.2f)", u["total"])
}

// pidByPort returns the pid of the process listening on 127.0.0.1/0.0.0.0/:: port.
func pidByPort(port int) (int, error) {
	inodes := map[string]bool{}
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(data), "\n") {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" { // 0A: LISTEN
				continue
			}
			_, hexPort, ok := strings.Cut(f[1], ":")
			if !ok {
				continue
			}
			if p, err := strconv.ParseInt(hexPort, 16, 32); err == nil && int(p) == port {
				inodes["socket:["+f[9]+"]"] = true
			}
		}
	}
	if len(inodes) == 0 {
		return 0, fmt.Errorf("nothing listens on port %d", port)
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fds, err := os.ReadDir(filepath.Join("/proc", e.Name(), "fd"))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if link, err := os.Readlink(filepath.Join("/proc", e.Name(), "fd", fd.Name())); err == nil && inodes[link] {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("port %d: listening socket found, but no process holding it is visible", port)
}

// machine describes the host for the report.
func machine() string {
	model := "?"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := "?"
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	var load string
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.Join(strings.Fields(string(data))[:3], " ")
	}
	return fmt.Sprintf("%d CPUs (%s), %s RAM, load average %s", numCPU(), model, mem, load)
}
