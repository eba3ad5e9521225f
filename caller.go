//go:build linux

package iopool

// Who is calling. A call that blocks its goroutine (Pool.Close, Handle.Wait,
// BlockOn, Chan.RecvWait, Oneshot.Wait) must not be made from inside a task:
// the task's pool runs nothing else until that task yields, so the call
// would block the whole pool, and wait forever when what it waits for is
// the same pool. These calls ask, just before they would block, whether the
// caller is a task, and panic with the call to use instead.
//
// A task is a coroutine created by its pool's loop goroutine (iter.Pull, in
// takeCoroutine), and the runtime records every goroutine's creator: runtime.Stack
// ends with "created by iter.Pull[...] in goroutine 42". Each pool's loop
// goroutine registers its id here while it lives, so "the caller is a task of
// p" is "the caller's creator is p's loop goroutine", exact per pool (a
// supervisor pool's task may close a worker pool), and also true of code
// running on the loop goroutine itself (a Waker). runtime.Stack costs a few
// microseconds; it is paid only by a call about to block, and only while
// some pool has a loop goroutine.
//
// Limit: a task that runs code on a coroutine of its own (iter.Pull inside
// the task) and blocks there is not recognized, since the creator of that
// coroutine is the task, not the loop.

import (
	"bytes"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
)

// loopGoroutine is a live pool loop goroutine: its id and its pool.
type loopGoroutine struct {
	id uint64
	p  *Pool
}

// loopGoroutines lists the live loop goroutines. The slice is replaced, not
// changed, under loopGoroutinesMu, so readers load it without a lock.
var (
	loopGoroutines   atomic.Pointer[[]loopGoroutine]
	loopGoroutinesMu sync.Mutex
)

// registerLoopGoroutine records the calling goroutine as p's loop goroutine
// and returns the function that forgets it, for the goroutine to defer.
func registerLoopGoroutine(p *Pool) (unregister func()) {
	id, _ := goroutineIDs()
	updateLoopGoroutines(func(old []loopGoroutine) []loopGoroutine {
		return append(old, loopGoroutine{id, p})
	})
	return func() {
		updateLoopGoroutines(func(old []loopGoroutine) []loopGoroutine {
			var kept []loopGoroutine
			for _, g := range old {
				if g.id != id {
					kept = append(kept, g)
				}
			}
			return kept
		})
	}
}

func updateLoopGoroutines(change func(old []loopGoroutine) []loopGoroutine) {
	loopGoroutinesMu.Lock()
	defer loopGoroutinesMu.Unlock()
	var old []loopGoroutine
	if l := loopGoroutines.Load(); l != nil {
		old = *l
	}
	next := change(append([]loopGoroutine(nil), old...))
	loopGoroutines.Store(&next)
}

// liveLoopGoroutines returns the current list (nil if none).
func liveLoopGoroutines() []loopGoroutine {
	if l := loopGoroutines.Load(); l != nil {
		return *l
	}
	return nil
}

// callerPool returns the pool whose task (or loop goroutine) the caller is
// running on, or nil for any other goroutine.
func callerPool() *Pool {
	loops := liveLoopGoroutines()
	if len(loops) == 0 {
		return nil
	}
	id, creator := goroutineIDs()
	for _, g := range loops {
		if g.id == id || (creator != 0 && g.id == creator) {
			return g.p
		}
	}
	return nil
}

// panicIfCalledFromTask panics, naming call and the call to use instead,
// if the caller is a task of any pool. It is called by a plain-goroutine
// call just before it blocks.
func panicIfCalledFromTask(call, instead string) {
	if anyTaskRunning() && callerPool() != nil {
		panic("iopool: " + call + " called from inside a task: it would block the task's whole pool until it returns, and forever if what it waits for needs that pool; use " + instead)
	}
}

// anyTaskRunning reports whether some pool is running one of its tasks now:
// a necessary condition for the caller to be a task, that costs a few
// atomic loads, so that goroutines about to block usually skip the stack
// trace.
func anyTaskRunning() bool {
	for _, g := range liveLoopGoroutines() {
		if g.p.current.Load() != nil {
			return true
		}
	}
	return false
}

// goroutineIDs returns the calling goroutine's id and the id of the
// goroutine that created it (0 if unknown), read from its stack trace:
//
//	goroutine 57 [running]:
//	...
//	created by iter.Pull[...] in goroutine 42
//
// runtime.Stack forces the same traceback format whatever GOTRACEBACK says,
// and prints at most 100 frames before the "created by" line.
func goroutineIDs() (id, creator uint64) {
	buf := make([]byte, 4<<10)
	for {
		n := runtime.Stack(buf, false)
		if n < len(buf) || len(buf) >= 1<<20 {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	id = leadingUint(bytes.TrimPrefix(buf, []byte("goroutine ")))
	if i := bytes.LastIndex(buf, []byte("\ncreated by ")); i >= 0 {
		line := buf[i+1:]
		if j := bytes.IndexByte(line, '\n'); j >= 0 {
			line = line[:j]
		}
		const in = " in goroutine "
		if k := bytes.LastIndex(line, []byte(in)); k >= 0 {
			creator = leadingUint(line[k+len(in):])
		}
	}
	return id, creator
}

// leadingUint parses the decimal number at the start of b (0 if none).
func leadingUint(b []byte) uint64 {
	n := 0
	for n < len(b) && b[n] >= '0' && b[n] <= '9' {
		n++
	}
	v, _ := strconv.ParseUint(string(b[:n]), 10, 64)
	return v
}

// callingTask returns the task of p that is calling, or nil when the
// caller is not one of p's tasks: a coroutine created by p's loop goroutine
// (see caller.go), not the loop goroutine itself (a Waker running there has
// no task to wait in). Only used before a name lookup: it reads the
// caller's stack (a few microseconds).
func (p *Pool) callingTask() *Task {
	t := p.current.Load()
	if t == nil {
		return nil
	}
	id, creator := goroutineIDs()
	for _, g := range liveLoopGoroutines() {
		if g.p == p && creator != 0 && g.id == creator && g.id != id {
			return t // one task of p runs at a time: the caller
		}
	}
	return nil
}
