//go:build linux

package iopool

import (
	"fmt"
	"time"

	"github.com/iopool/iopool/internal/sys"
)

// Option configures a Pool in New. Every option fits a lone pool; all but
// WithCPU fit a Group too, and are PoolGroupOptions.
type Option interface {
	applyToPool(*options) error
}

// GroupOption configures a Group in NewGroup: WithPinCPU, and every
// PoolGroupOption. An Option that fits a lone pool only (WithCPU) is not a
// GroupOption, so passing it to NewGroup does not compile.
type GroupOption interface {
	applyToGroup(*groupOptions) error
}

// PoolGroupOption configures a Pool in New, and each pool of a Group in
// NewGroup: it is both an Option and a GroupOption.
type PoolGroupOption interface {
	Option
	GroupOption
}

// poolOption is an Option for a lone pool only (WithCPU).
type poolOption func(*options) error

func (f poolOption) applyToPool(o *options) error { return f(o) }

// eachPoolOption is a PoolGroupOption that NewGroup hands to each pool.
type eachPoolOption func(*options) error

func (f eachPoolOption) applyToPool(o *options) error { return f(o) }

func (f eachPoolOption) applyToGroup(g *groupOptions) error {
	g.eachPool = append(g.eachPool, f)
	return nil
}

// groupOption is a GroupOption for a Group only (WithPinCPU).
type groupOption func(*groupOptions) error

func (f groupOption) applyToGroup(g *groupOptions) error { return f(g) }

// groupOptions is what NewGroup's options set, each applied once.
type groupOptions struct {
	name     string   // WithName: pool i is named name-i ("pool-i" without it)
	pinEach  bool     // WithPinCPU: pool i is pinned to a CPU of its own
	eachPool []Option // the options every pool is made with
}

// options is what New's options set.
type options struct {
	lockOSThread bool
	eventBuffer  int
	uringEntries uint32
	faults       *sys.Faults // the pool's fault seam; set only by tests (withFaults, export_test.go)
	obs          observeOptions
	cpu          int // WithCPU: the CPU the loop thread is pinned to, or -1
	// notRunningBound: how long goroutine code waits on a pool whose loop
	// is not running before it fails with ErrNotRunning (see parkOn).
	notRunningBound time.Duration
	virtualClock    bool // WithVirtualClock (clock.go)
	trackTasks      bool // WithTaskTracking (tasktable.go)
}

const (
	defaultEventBuffer = 256
	maxEventBuffer     = 1 << 16
)

// WithLockOSThread runs the pool's loop on a goroutine locked to an OS thread
// of its own for the pool's whole life, so every task of the pool runs on
// that one thread: thread-bound kernel state set by a task (setns, CPU
// affinity, timer slack) stays in force for all of them, and the thread
// exits when the pool closes.
//
// When to use it: when the tasks need the thread — a network namespace
// entered with setns, a CPU the thread is pinned to (WithCPU implies it),
// other per-thread state — or in a thread-per-core server whose tasks do
// the work; for fd work (sockets, timers, io_uring) a locked loop costs what
// an unlocked one does, and so do the net adapters (net/http, gRPC or TLS
// over Listener.NetListener, NetConn, NetPacketConn), whose goroutines wait
// in Go's own poller and never on the loop. Leave it off when goroutines
// wait on the loop: a Chan or Oneshot that goroutines wait on,
// Handle.Wait, BlockOn. A goroutine the pool wakes cannot run on the locked
// thread, so every such wake is a hand-off to another thread, where an
// unlocked loop runs the goroutine on its own thread before it sleeps. A locked loop that woke a goroutine hands its P
// over (runtime.Gosched) before it sleeps, and passes through the scheduler
// at least every 5 ms. docs/benchmarks.md measures both
// kinds of loop; docs/locked-loop.md explains the hand-off.
//
// This is the way to keep a task on one thread. A task must not call
// runtime.LockOSThread (or UnlockOSThread) and then await while the
// calls are unbalanced: a task is a coroutine, the Go runtime switches
// coroutines only in the thread-lock state they were created in, and it
// ends the process ("fatal error: coro: OS thread locking must match
// locking at coroutine creation") at the task's next suspension. The runtime
// offers no cheap way to detect it before (see Task).
func WithLockOSThread() PoolGroupOption {
	return eachPoolOption(func(o *options) error { o.lockOSThread = true; return nil })
}

// WithEventBuffer sets how many epoll events the loop takes from the kernel
// per wait (default 256, at most 65536).
func WithEventBuffer(n int) PoolGroupOption {
	return eachPoolOption(func(o *options) error {
		if n < 1 || n > maxEventBuffer {
			return fmt.Errorf("iopool: WithEventBuffer(%d): want 1..%d events", n, maxEventBuffer)
		}
		o.eventBuffer = n
		return nil
	})
}
