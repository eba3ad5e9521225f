//go:build linux

package iopool

// The task table: Pool.Tasks lists a pool's live tasks with what each
// waits on. Nothing is measured for it on the hot path: an await stores its
// future (one field of the task's coroutine) and a resume counts one poll.
// A task costs no memory for it: the fields are the coroutine's, which a
// task has only while it runs. Where and when a task was spawned is
// recorded only WithTaskTracking. What the future waits on is put in words only when
// the table is read, on the loop (futures describe themselves through
// waitDescriber), so a future's own fields are read by their owner.

import (
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"time"
	"weak"

	"github.com/iopool/iopool/internal/uring"
)

// TaskState is a task's state in the task table.
type TaskState uint8

const (
	// TaskRunning: the task is running on the loop now (the task that
	// called Tasks, or one that keeps the loop busy).
	TaskRunning TaskState = iota
	// TaskReady: woken, queued to run in the loop's next cycle.
	TaskReady
	// TaskWaiting: suspended in an await until its future's waker fires;
	// TaskInfo.WaitingOn says on what.
	TaskWaiting
	// TaskFinished: finished, and nobody has taken its result (Join, Wait,
	// Result, a Select or JoinSet.Next) while its Handle is reachable;
	// listed with WithTaskTracking only, after the live tasks, in
	// finishing order. A task whose Join or Wait was already waiting when
	// it finished is not listed: the joiner takes the result at once.
	TaskFinished
)

var taskStateNames = [...]string{TaskRunning: "running", TaskReady: "ready", TaskWaiting: "waiting",
	TaskFinished: "finished, not joined"}

func (s TaskState) String() string {
	if int(s) < len(taskStateNames) {
		return taskStateNames[s]
	}
	return fmt.Sprintf("TaskState(%d)", s)
}

// MarshalText writes the state's name (as in JSON).
func (s TaskState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// TaskInfo describes one task of a pool: live (spawned, not yet finished),
// or (WithTaskTracking) finished with nobody having taken its result.
type TaskInfo struct {
	Name  string    // the name it was spawned with
	State TaskState // running, ready, waiting, or finished but not joined
	// WaitingOn says, for a waiting task, what its await waits for: "read
	// fd 7", "timer in 59m0s", "Chan.Recv", "Join of task \"worker\"",
	// "io_uring read fd 9"; a future of the user's own is named by its
	// type. Empty for a task that is not waiting.
	WaitingOn string
	// SpawnedAt is where the task was spawned, "file:line": the call of
	// Spawn (or SpawnContext, Run...) with WithTaskTracking; without it, where
	// the task's function is defined, which for a function literal written
	// in the Spawn call is the same line, followed by the function's name.
	SpawnedAt string
	// Age is how long ago the task was spawned, on the pool's clock,
	// recorded with WithTaskTracking only: 0 without it.
	Age   time.Duration
	Polls uint64 // times the loop resumed it; 0 once finished
}

// WithTaskTracking makes the task table say more, at a cost per task: it
// records where and when each task is spawned (the caller of Spawn,
// SpawnContext, JoinSet.Spawn, Run), for TaskInfo.SpawnedAt and
// TaskInfo.Age, and keeps listing a task that finished with nobody waiting
// for its result (TaskFinished) until the result is taken or its Handle is
// dropped — a task leaked like an unjoined goroutine. It costs a stack walk,
// a clock read and an allocation per spawn, and a weak pointer per task
// that finishes unjoined (a few hundred nanoseconds each), so it is off by
// default; without it SpawnedAt names where the task's function is defined,
// Age is 0, and a finished task leaves the table.
func WithTaskTracking() PoolGroupOption {
	return eachPoolOption(func(o *options) error { o.trackTasks = true; return nil })
}

// spawnSite is the call stack of a task's spawn (WithTaskTracking).
type spawnSite struct {
	pcs [8]uintptr
	n   int
	at  int64 // pool clock ns of the spawn
}

// recordSpawnSite captures the spawn's call stack. Called while the task
// is created, before it is queued.
func (t *Task) recordSpawnSite() {
	s := &spawnSite{at: t.pool.monoNow()}
	s.n = runtime.Callers(3, s.pcs[:]) // above recordSpawnSite and init
	t.extra().site = s
}

// spawnedAt is TaskInfo.SpawnedAt. Safe from any goroutine.
func (t *Task) spawnedAt() string {
	if e := t.ext.Load(); e != nil && e.site != nil {
		if f, ok := firstUserFrame(e.site.pcs[:e.site.n]); ok {
			return fmt.Sprintf("%s:%d", f.File, f.Line)
		}
	}
	if r, ok := t.runner.(interface{ taskFunc() any }); ok {
		if fn := r.taskFunc(); fn != nil {
			pc := reflect.ValueOf(fn).Pointer()
			if f := runtime.FuncForPC(pc); f != nil {
				file, line := f.FileLine(pc)
				return fmt.Sprintf("%s:%d (%s)", file, line, f.Name())
			}
		}
	}
	return "unknown"
}

// firstUserFrame returns the first frame of pcs outside package iopool
// (its tests count as outside).
func firstUserFrame(pcs []uintptr) (runtime.Frame, bool) {
	frames := runtime.CallersFrames(pcs)
	for {
		f, more := frames.Next()
		if !strings.HasPrefix(f.Function, "github.com/iopool/iopool.") || strings.HasSuffix(f.File, "_test.go") {
			return f, true
		}
		if !more {
			return runtime.Frame{}, false
		}
	}
}

func (h *Handle[T]) taskFunc() any {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fn == nil {
		return nil // a nil func in an interface is not a nil interface
	}
	return h.fn
}

func (r *rootRunner) taskFunc() any { return r.fn }

// taskTableWait is how long Tasks waits for a busy loop to answer before it
// lists what it can read without the loop.
const taskTableWait = 50 * time.Millisecond

// taskTableRequest is a Tasks call waiting for the loop to answer.
type taskTableRequest struct {
	done  chan struct{} // closed once infos is filled
	infos []TaskInfo
}

// Tasks lists the pool's live tasks. Safe from any goroutine. While the
// loop runs, the list is made by the loop between two cycles, so what each
// task waits on is read by the goroutine that owns it; Tasks wakes the loop
// for it and waits. If the loop does not answer within 50ms (a task
// keeps it busy), Tasks lists each task without WaitingOn and Polls, and
// names the running task. From a task of the pool it lists directly, the
// caller as running.
func (p *Pool) Tasks() []TaskInfo {
	if callerPool() == p {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.taskTableLocked(true)
	}
	for {
		p.mu.Lock()
		if !p.running {
			// The tasks are suspended, and their fields were last written
			// before the loop's last release of p.mu.
			defer p.mu.Unlock()
			return p.taskTableLocked(true)
		}
		r := p.tableReq
		if r == nil {
			r = &taskTableRequest{done: make(chan struct{})}
			p.tableReq = r
		}
		rs := p.runState.Load()
		p.unlockAndSignal(p.state.wake())
		timer := time.NewTimer(taskTableWait)
		select {
		case <-r.done:
			timer.Stop()
			return slices.Clone(r.infos)
		case <-rs.changed:
			timer.Stop()
			continue // the loop stopped or started: look again
		case <-timer.C:
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		select {
		case <-r.done:
			return slices.Clone(r.infos)
		default:
			return p.taskTableLocked(false)
		}
	}
}

// serveTaskTableLocked answers a pending Tasks call. Loop only, with p.mu
// held, between two cycles.
func (p *Pool) serveTaskTableLocked() {
	r := p.tableReq
	p.tableReq = nil
	r.infos = p.taskTableLocked(true)
	close(r.done)
}

// taskTableLocked lists the live tasks, with p.mu held. ownerView is true
// when the caller may read what only the loop and the tasks touch: it is
// the loop, or a task, or the loop is not running.
func (p *Pool) taskTableLocked(ownerView bool) []TaskInfo {
	now := p.monoNow()
	running := p.current.Load()
	infos := make([]TaskInfo, 0, p.live.n)
	for t := p.live.head; t != nil; t = t.nextLive {
		info := TaskInfo{Name: t.name, SpawnedAt: t.spawnedAt()}
		if e := t.ext.Load(); e != nil && e.site != nil {
			info.Age = time.Duration(now - e.site.at)
		}
		switch {
		case t == running:
			info.State = TaskRunning
		case t.wake.Load() != 0:
			info.State = TaskReady
		default:
			info.State = TaskWaiting
		}
		if c := t.co; ownerView && c != nil {
			info.Polls = uint64(c.polls)
			if info.State == TaskWaiting {
				info.WaitingOn = describeWait(p, c.awaiting)
			}
		} else if info.State == TaskWaiting {
			info.WaitingOn = "unknown: the loop is busy"
		}
		infos = append(infos, info)
	}
	// Oldest first, as they were spawned (the live list is newest first).
	slices.Reverse(infos)
	p.unjoined.prune()
	for _, w := range p.unjoined.tasks {
		if t := w.Value(); t != nil {
			info := TaskInfo{Name: t.name, State: TaskFinished, SpawnedAt: t.spawnedAt()}
			if e := t.ext.Load(); e != nil && e.site != nil {
				info.Age = time.Duration(now - e.site.at)
			}
			infos = append(infos, info)
		}
	}
	return infos
}

// unjoinedList holds the finished tasks whose result nobody has taken
// (WithTaskTracking), by weak pointer: a Handle that is dropped unjoined takes its entry with it
// (pruned later), as a goroutine's result is dropped with it. Owned by the
// pool, under its lock; an entry is added only for a task that finished
// with nobody waiting for it, so a Join that waits costs nothing here.
type unjoinedList struct {
	tasks []weak.Pointer[Task]
}

// add lists t, first pruning the list when it is full, so that its length
// stays within twice the tasks it names.
func (l *unjoinedList) add(t *Task) {
	if len(l.tasks) == cap(l.tasks) {
		l.prune()
	}
	l.tasks = append(l.tasks, weak.Make(t))
}

// prune drops the entries of tasks collected or joined since.
func (l *unjoinedList) prune() {
	kept := l.tasks[:0]
	for _, w := range l.tasks {
		if t := w.Value(); t != nil && t.runner.unjoined() {
			kept = append(kept, w)
		}
	}
	clear(l.tasks[len(kept):])
	l.tasks = kept
}

// waitDescriber is implemented by the futures of this package: what the
// future waits on, in words. Called by the loop (or with the loop stopped)
// with p.mu held: it must not take p.mu.
type waitDescriber interface {
	waitingOn(p *Pool) string
}

// describeWait puts what a task's await waits on in words.
func describeWait(p *Pool, fut any) string {
	switch f := fut.(type) {
	case nil:
		return "nothing yet"
	case waitDescriber:
		return f.waitingOn(p)
	}
	return fmt.Sprintf("%T", fut)
}

// timeLeft says how far deadline (on p's clock) is from now.
func timeLeft(p *Pool, deadline int64) string {
	left := time.Duration(deadline - p.monoNow())
	if left <= 0 {
		return "due"
	}
	if left >= time.Millisecond {
		left = left.Round(time.Millisecond)
	}
	return "in " + left.String()
}

func (w *ioWait) waitingOn(p *Pool) string {
	side := "read"
	if w.slot == SlotWrite {
		side = "write"
	}
	s := fmt.Sprintf("%s fd %d", side, w.fr.fd)
	if d := w.deadline.Load(); d != 0 {
		s += ", deadline " + timeLeft(p, d)
	}
	return s
}

func (f *timerFuture) waitingOn(p *Pool) string { return "timer " + timeLeft(p, f.deadline) }

func (tm *Timer) waitingOn(p *Pool) string {
	if !tm.hasDeadline {
		return "timer without a deadline"
	}
	return "timer " + timeLeft(p, tm.e.deadline)
}

func (tk *Ticker) waitingOn(p *Pool) string {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	return fmt.Sprintf("Ticker every %v, next tick %s", tk.period, timeLeft(p, p.mono(tk.next)))
}

func (c *Chan[T]) waitingOn(*Pool) string    { return "Chan.Recv" }
func (o *Oneshot[T]) waitingOn(*Pool) string { return "Oneshot.Recv" }
func (h *Handle[T]) waitingOn(*Pool) string  { return fmt.Sprintf("Join of task %q", h.task.name) }
func (s *JoinSet[T]) waitingOn(*Pool) string { return "JoinSet.Next" }
func (s *Signals) waitingOn(*Pool) string    { return "Signals.Next" }
func (fs *FdSignal) waitingOn(*Pool) string  { return fmt.Sprintf("FdSignal on fd %d", fs.fd) }
func (f *readWait) waitingOn(*Pool) string   { return fmt.Sprintf("readable fd %d", f.fd) }
func (f *writeWait) waitingOn(*Pool) string  { return fmt.Sprintf("writable fd %d", f.fd) }
func (f *batchWait) waitingOn(*Pool) string  { return "io_uring Batch" }
func (f PollFunc[T]) waitingOn(*Pool) string { return "PollFunc (Select or a poll function)" }

func (f selectFuture) waitingOn(p *Pool) string {
	cases := make([]string, len(f))
	for i, c := range f {
		cases[i] = describeWait(p, c.future())
	}
	return "Select: " + strings.Join(cases, " | ")
}

func (w *opWait) waitingOn(*Pool) string {
	if w.opcode == uring.OpNop {
		return "io_uring nop"
	}
	name, ok := uringOpNames[w.opcode]
	if !ok {
		name = opName(w.opcode)
	}
	return fmt.Sprintf("io_uring %s fd %d", name, w.fd)
}

// uringOpNames names the opcodes of the operations a task can await.
var uringOpNames = map[uint8]string{
	uring.OpReadv: "readv", uring.OpWritev: "writev", uring.OpFsync: "fsync",
	uring.OpPollAdd: "poll", uring.OpSendmsg: "sendmsg", uring.OpRecvmsg: "recvmsg",
	uring.OpTimeout: "timeout", uring.OpAccept: "accept", uring.OpConnect: "connect",
	uring.OpOpenat: "openat", uring.OpClose: "close", uring.OpStatx: "statx",
	uring.OpRead: "read", uring.OpWrite: "write", uring.OpSend: "send", uring.OpRecv: "recv",
	uring.OpOpenat2: "openat2", uring.OpSocket: "socket",
}
