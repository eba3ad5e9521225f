//go:build linux

package iopool

// A pool that runs itself (Start), and the rule that goroutine code never
// waits silently on a loop that is not running.
//
// Whether the loop is being driven (by Run, Start or Close's drain) is
// published in runState, replaced (never changed) under p.mu whenever it
// changes, with the old value's channel closed: a goroutine parked on the
// pool (parkOn) reads it without the pool's lock and is woken by the change.

import (
	"fmt"
	"time"
)

// defaultNotRunningBound is how long a goroutine waits for a pool whose loop
// is not running before it fails with ErrNotRunning (see parkOn).
const defaultNotRunningBound = time.Second

// loopRunState is one value of Pool.runState.
type loopRunState struct {
	running bool          // a Run, Start or Close's drain is driving the loop
	changed chan struct{} // closed when this state is replaced
}

// Start runs the pool's loop on the pool's own goroutine (its own OS thread
// with WithLockOSThread) until Close, and returns at once. It is for
// programs whose work is goroutine code — net/http, gRPC or crypto/tls over
// Listener.NetListener (whose goroutines wait in Go's own poller, with or
// without the loop) next to tasks, timers, Handle.Wait, BlockOn — and that
// have no root task to give Run. Tasks are added with Spawn(p.Driver(), ...) from
// any goroutine and run as they would under Run.
//
// Close stops a started pool: it cancels the tasks, lets them finish, waits
// for the loop goroutine to stop and releases the pool. A panic in a task
// reaches its Handle (Join, Wait) as a *PanicError, as under Run; the loop
// goes on.
//
// Start returns an error wrapping ErrRunning if the pool was already started
// or a Run is active, and one wrapping ErrClosed after Close. Run on a
// started pool returns an error wrapping ErrRunning.
func (p *Pool) Start() error {
	p.mu.Lock()
	switch {
	case p.closing || p.closed:
		p.mu.Unlock()
		return fmt.Errorf("%w: Pool.Start after Close", ErrClosed)
	case p.started:
		p.mu.Unlock()
		return fmt.Errorf("%w: Pool.Start called twice", ErrRunning)
	case p.running:
		p.mu.Unlock()
		return fmt.Errorf("%w: Pool.Start called while Run is active", ErrRunning)
	}
	p.started = true
	p.setRunningLocked(true)
	p.runExit = make(chan struct{})
	p.mu.Unlock()
	p.onLoopAsync(func() {
		p.runLoop(func() bool { return false }) // until Close
		p.endRun()
	})
	return nil
}

// setRunningLocked records whether the loop is driven and wakes the
// goroutines parked on the pool, which look again. Called with p.mu held.
func (p *Pool) setRunningLocked(running bool) {
	p.running = running
	old := p.runState.Load()
	p.runState.Store(&loopRunState{running: running, changed: make(chan struct{})})
	if old != nil {
		close(old.changed)
	}
}

// errNotRunning is the error of a goroutine that waited on p for bound
// while its loop was not running.
func (p *Pool) errNotRunning(bound time.Duration) error {
	return fmt.Errorf("%w (pool %q, not running for %v)", ErrNotRunning, p.Name(), bound)
}

// parkOn blocks a plain goroutine that waits for something p's loop
// delivers, until ready is readable, p's clock reaches deadline (0: none),
// or p's loop starts or stops being driven (the caller looks again and
// parks again); it then returns nil. While the loop is not running, it
// waits at most p's not-running bound (one second) and then returns an
// error wrapping ErrNotRunning, or ErrClosed if the pool was closed
// meanwhile: a loop started within the bound serves the goroutine as if it
// had run all along. timer is the caller's reusable timer (created on
// first use); only the parked goroutine touches it.
func (p *Pool) parkOn(ready <-chan struct{}, deadline int64, timer **time.Timer) error {
	rs := p.runState.Load()
	wait := time.Duration(-1) // none
	if deadline != 0 {
		if wait = time.Duration(deadline - p.monoNow()); wait <= 0 {
			return nil
		}
	}
	bounded := false
	if !rs.running {
		if bound := p.opts.notRunningBound; wait < 0 || bound < wait {
			wait, bounded = bound, true
		}
	}
	if wait < 0 {
		select {
		case <-ready:
		case <-rs.changed:
		}
		return nil
	}
	if *timer == nil {
		*timer = time.NewTimer(wait)
	} else {
		(*timer).Reset(wait) // since Go 1.23 no stale tick can be received
	}
	select {
	case <-ready:
	case <-rs.changed:
	case <-(*timer).C:
		if !bounded || p.runState.Load() != rs {
			return nil
		}
		if p.isClosing() {
			return fmt.Errorf("%w (pool %q)", ErrClosed, p.Name())
		}
		return p.errNotRunning(p.opts.notRunningBound)
	}
	(*timer).Stop()
	return nil
}

// parkUntilClosed parks a plain goroutine until done is closed, through
// parkOn: it fails with ErrNotRunning if p's loop does not run for the
// bound meanwhile.
func (p *Pool) parkUntilClosed(done <-chan struct{}) error {
	var timer *time.Timer
	for {
		select {
		case <-done:
			return nil
		default:
		}
		if err := p.parkOn(done, 0, &timer); err != nil {
			return err
		}
	}
}
