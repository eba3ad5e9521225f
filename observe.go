//go:build linux

package iopool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// observeOptions are the pool's observability settings, all off by default.
type observeOptions struct {
	name   string       // the pool's name in profiles, logs and stall reports
	logger *slog.Logger // rare events; nil: silent

	stallThreshold time.Duration     // 0: stalls are not measured
	stallReport    func(StallReport) // nil: logged
}

// WithName names the pool. The name appears in the pprof label "pool" of
// every task, in log records and in stall reports; pools are named "pool"
// when unnamed.
func WithName(name string) PoolGroupOption { return nameOption(name) }

// nameOption is WithName: a pool's name, or the prefix of a group's.
type nameOption string

func (n nameOption) applyToPool(o *options) error {
	if n == "" {
		return errors.New("iopool: WithName: empty name")
	}
	o.obs.name = string(n)
	return nil
}

func (n nameOption) applyToGroup(g *groupOptions) error {
	if n == "" {
		return errors.New("iopool: WithName: empty name")
	}
	g.name = string(n)
	return nil
}

// WithLogger has the pool log rare events to logger: a listener backing off
// because the process is out of fds (Warn), the kernel refusing io_uring
// (Warn), a task that panicked (Error). Nothing on the hot path is logged.
// Without it the pool is silent.
func WithLogger(logger *slog.Logger) PoolGroupOption {
	return eachPoolOption(func(o *options) error {
		if logger == nil {
			return errors.New("iopool: WithLogger: nil logger")
		}
		o.obs.logger = logger
		return nil
	})
}

// Name returns the pool's name (WithName), "pool" by default.
func (p *Pool) Name() string {
	if p.opts.obs.name == "" {
		return "pool"
	}
	return p.opts.obs.name
}

// logAcceptBackoff records that an accept loop pauses for lack of fds.
func (p *Pool) logAcceptBackoff(addr net.Addr, err error, pause time.Duration) {
	if l := p.opts.obs.logger; l != nil {
		l.Warn("iopool: accept backing off: out of file descriptors",
			"pool", p.Name(), "addr", addr, "err", err, "pause", pause)
	}
}

// logUringRefused records that io_uring could not be set up.
func (p *Pool) logUringRefused(err error) {
	if l := p.opts.obs.logger; l != nil {
		l.Warn("iopool: io_uring unavailable", "pool", p.Name(), "err", err)
	}
}

// logTaskPanic records a task's panic (Join, Wait or Run still return it).
func (p *Pool) logTaskPanic(pe *PanicError) {
	if l := p.opts.obs.logger; l != nil {
		l.Error("iopool: task panicked", "pool", p.Name(), "task", pe.Task, "panic", pe.Value)
	}
}

// Profiles: every task runs with the pprof labels "pool" (the pool's name)
// and "task" (the task's name), so a CPU profile can be grouped by task
// (go tool pprof -tagfocus task=conn, or -tags); the loop goroutine itself
// carries "pool" only. The labels are set once when a task starts, on the
// task's own coroutine goroutine; pprof.Do inside a task adds to them.

// observeState is the pool's observability state. labelCache is the
// loop's; run and watchdog are shared with the stall watchdog (see watchedRun).
type observeState struct {
	labelCache map[string]context.Context // task pprof labels by task name; loop only
	run        watchedRun                 // WithStallReport: the task run in progress
	watchdog   sync.Once                  // starts watchStalls with the first watched run
}

// maxLabelCache bounds the pool's cache of label sets by task name (names
// built per connection would otherwise grow it without end).
const maxLabelCache = 256

// taskLabels returns the label context for a task named name. It runs on
// the loop (inside a starting task), so the cache needs no lock.
func (p *Pool) taskLabels(name string) context.Context {
	if ctx, ok := p.obs.labelCache[name]; ok {
		return ctx
	}
	ctx := pprof.WithLabels(context.Background(), pprof.Labels("pool", p.Name(), "task", name))
	if p.obs.labelCache == nil {
		p.obs.labelCache = make(map[string]context.Context)
	}
	if len(p.obs.labelCache) < maxLabelCache {
		p.obs.labelCache[name] = ctx
	}
	return ctx
}

// setTaskLabels labels the running task's goroutine. Called by the task's
// coroutine before the task function runs.
func (t *Task) setTaskLabels() {
	pprof.SetGoroutineLabels(t.pool.taskLabels(t.name))
}

// withLabels returns ctx carrying the task's pprof labels, so that
// pprof.Do(t.Context(), ...) inside the task keeps "pool" and "task".
func (t *Task) withLabels(ctx context.Context) context.Context {
	return pprof.WithLabels(ctx, pprof.Labels("pool", t.pool.Name(), "task", t.name))
}

// setLoopLabels labels the loop goroutine (and, by inheritance, the task
// coroutines it creates until they set their own).
func (p *Pool) setLoopLabels() {
	pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("pool", p.Name())))
}

// StallReport describes a task that ran longer than the stall threshold
// without suspending: everything else on its pool waited meanwhile.
type StallReport struct {
	Pool     string        // the pool's name
	Task     string        // the task's name
	Duration time.Duration // how long it ran before it suspended or finished (so far, if Running)
	// Running is true for a report made while the task still runs (a task
	// that never suspends is reported this way, once per run); such a run
	// is reported again, with its whole duration, when it ends.
	Running bool
	// Resumed is where the task was resumed for that run: the first frame
	// outside package iopool of the call in which it last suspended
	// ("function (file:line)"), or "start of the task" for its first run.
	Resumed string
	// SpawnedAt is where the task was spawned, as the task table says it
	// (TaskInfo.SpawnedAt).
	SpawnedAt string
	Stack     string // the whole stack of that call, one frame per line
}

// WithStallReport reports every run of a task that lasts longer than
// threshold without suspending (a loop that forgot to yield, a blocking
// syscall, a long computation), with the pool, the task, the duration and
// where the task had been resumed. A run is reported when it ends, on the
// loop goroutine, and, if it is still going on, by a watchdog goroutine
// that looks every threshold/2: a task stuck for good is reported too.
// report may therefore be called from both goroutines at once, and should
// be quick; a nil report logs the stall at Warn level to the pool's logger
// (WithLogger), or to slog.Default() if the pool has none.
//
// Without this option nothing is measured and no goroutine is started.
// With it, each run of a task reads the clock twice and takes a lock, and
// each suspension records its call stack (about a microsecond).
func WithStallReport(threshold time.Duration, report func(StallReport)) PoolGroupOption {
	return eachPoolOption(func(o *options) error {
		if threshold <= 0 {
			return fmt.Errorf("iopool: WithStallReport(%v): want a threshold > 0", threshold)
		}
		o.obs.stallThreshold, o.obs.stallReport = threshold, report
		return nil
	})
}

// stallState is what a watched task records when it suspends.
type stallState struct {
	pcs [32]uintptr
	n   int // valid entries of pcs; 0 before the first suspension
}

// recordSuspend remembers where a watched task suspends: where it will
// resume. Task only.
func (st *stallState) recordSuspend() {
	st.n = runtime.Callers(4, st.pcs[:]) // from the await that called Task.suspend
}

// watchedRun is the task run in progress, for the watchdog.
type watchedRun struct {
	mu       sync.Mutex
	task     *Task       // mu
	start    time.Time   // mu: zero when no task runs
	pcs      [32]uintptr // mu: where it resumed
	n        int         // mu
	reported bool        // mu: the watchdog reported this run
}

// resumeWatched resumes t as runBatch does, measuring the run and
// reporting it if it exceeded the stall threshold. Loop only.
func (p *Pool) resumeWatched(t *Task) (out runOutcome) {
	e := t.extra()
	if e.stall == nil {
		e.stall = new(stallState)
	}
	w := &p.obs.run
	w.mu.Lock()
	w.task, w.n, w.reported = t, copy(w.pcs[:], e.stall.pcs[:e.stall.n]), false
	w.start = time.Now()
	start := w.start
	w.mu.Unlock()
	p.obs.watchdog.Do(func() { go p.watchStalls(p.closeEnd) })

	out = runTask(t.co)

	d := time.Since(start)
	w.mu.Lock()
	w.start = time.Time{}
	pcs, n := w.pcs, w.n
	w.mu.Unlock()
	if d > p.opts.obs.stallThreshold {
		p.reportStall(StallReport{Task: t.name, SpawnedAt: t.spawnedAt(), Duration: d}, pcs[:n])
	}
	return out
}

// watchStalls reports a run that is still going on past the threshold,
// once per run, until the pool is closed.
func (p *Pool) watchStalls(closed <-chan struct{}) {
	threshold := p.opts.obs.stallThreshold
	tick := time.NewTicker(max(threshold/2, time.Millisecond))
	defer tick.Stop()
	w := &p.obs.run
	for {
		select {
		case <-closed:
			return
		case <-tick.C:
		}
		w.mu.Lock()
		if w.start.IsZero() || w.reported || time.Since(w.start) <= threshold {
			w.mu.Unlock()
			continue
		}
		w.reported = true
		t := w.task
		r := StallReport{Task: t.name, Duration: time.Since(w.start), Running: true}
		pcs, n := w.pcs, w.n
		w.mu.Unlock()
		r.SpawnedAt = t.spawnedAt()
		p.reportStall(r, pcs[:n])
	}
}

// reportStall completes r with the pool and where the task resumed (pcs)
// and hands it to the report function or the logger.
func (p *Pool) reportStall(r StallReport, pcs []uintptr) {
	r.Pool, r.Resumed = p.Name(), "start of the task"
	if len(pcs) > 0 {
		var stack strings.Builder
		frames := runtime.CallersFrames(pcs)
		found := false
		for {
			f, more := frames.Next()
			line := fmt.Sprintf("%s (%s:%d)", f.Function, f.File, f.Line)
			fmt.Fprintln(&stack, line)
			if !found && (!strings.HasPrefix(f.Function, "github.com/iopool/iopool.") || strings.HasSuffix(f.File, "_test.go")) {
				r.Resumed, found = line, true
			}
			if !more {
				break
			}
		}
		r.Stack = stack.String()
	}
	if p.opts.obs.stallReport != nil {
		p.opts.obs.stallReport(r)
		return
	}
	l := p.opts.obs.logger
	if l == nil {
		l = slog.Default()
	}
	l.Warn("iopool: task stalled the pool", "pool", r.Pool, "task", r.Task, "duration", r.Duration,
		"running", r.Running, "resumed", r.Resumed, "spawned_at", r.SpawnedAt)
}

// Stats is a snapshot of a pool's counters. Reading them is cheap and safe
// from any goroutine; counters only grow, except the three live gauges.
type Stats struct {
	Cycles         uint64 // loop cycles run
	Sleeps         uint64 // times the loop blocked in epoll_wait
	EventfdWrites  uint64 // wake eventfd writes (at most one per sleep)
	Wakes          uint64 // task wakes that queued a task
	TimersFired    uint64 // timers that expired in the loop
	TasksSpawned   uint64 // tasks created, the root tasks included
	TasksLive      int64  // tasks not yet finished
	FdsRegistered  int64  // fds in the pool's epoll set now
	FdsGoPolled    int64  // sockets served to goroutines through Go's poller now (NetConn, net.Listener, net.PacketConn)
	Events         uint64 // epoll events dispatched to registrations
	UringEnters    uint64 // io_uring_enter calls
	UringSubmitted uint64 // SQEs handed to the kernel
	UringCompleted uint64 // CQEs consumed
}

// poolStats are the counters behind Stats. Any goroutine adds to them and
// reads them, atomically, without a lock.
type poolStats struct {
	cycles, sleeps, eventfdWrites, wakes, timersFired, tasksSpawned atomic.Uint64
	events, uringEnters, uringSubmitted, uringCompleted             atomic.Uint64
	tasksLive, fdsRegistered, fdsGoPolled                           atomic.Int64
}

// Stats returns a snapshot of the pool's counters.
func (p *Pool) Stats() Stats {
	s := &p.stats
	return Stats{
		Cycles: s.cycles.Load(), Sleeps: s.sleeps.Load(), EventfdWrites: s.eventfdWrites.Load(),
		Wakes: s.wakes.Load(), TimersFired: s.timersFired.Load(), TasksSpawned: s.tasksSpawned.Load(),
		TasksLive: s.tasksLive.Load(), FdsRegistered: s.fdsRegistered.Load(),
		FdsGoPolled: s.fdsGoPolled.Load(), Events: s.events.Load(),
		UringEnters: s.uringEnters.Load(), UringSubmitted: s.uringSubmitted.Load(),
		UringCompleted: s.uringCompleted.Load(),
	}
}
