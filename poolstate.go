//go:build linux

package iopool

import "fmt"

// poolState is the loop's sleep/wake state machine, guarded by Pool.mu. It
// decides when a wake must write the eventfd: only when the loop is, or is
// about to be, blocked in epoll_wait, and then only once per sleep.
//
//	state      meaning                                   entered by
//	Running    running a cycle; no wake pending          reset (top of each cycle)
//	RunAgain   woken while running: cycle again          wake from Running
//	Sleeping   in epoll_wait until deadline (or forever) sleep from Running
//	Waking     woken from a sleep, or back from it       wake/wakeForTimer from Sleeping; the loop after epoll_wait
//
//	transition             caller                    eventfd write
//	Running  → RunAgain    wake (any goroutine)      no: the loop checks canSleep before sleeping
//	RunAgain → RunAgain    wake                      no
//	Sleeping → Waking      wake, or wakeForTimer     yes, exactly once for this sleep
//	                       with an earlier deadline
//	Waking   → Waking      wake, wakeForTimer        no: the write was made, or the loop is up
//	Running  → Sleeping    sleep (loop, canSleep)    -
//	any but Sleeping → Running   reset (loop)        -
//
// While Sleeping or Waking the kernel's current batch of events may name
// registrations (isReferencingOps), so closing one is deferred.
type poolState struct {
	state       loopState
	deadline    int64 // pool clock ns at which the sleep times out; valid while Sleeping with hasDeadline
	hasDeadline bool  // the sleep has a timeout
}

// loopState names the states of poolState.
type loopState uint8

const (
	stateRunning  loopState = iota // running a cycle; no wake pending
	stateRunAgain                  // woken while running: run another cycle before sleeping
	stateSleeping                  // in epoll_wait
	stateWaking                    // woken from epoll_wait, or returned from it
)

var loopStateNames = [...]string{"Running", "RunAgain", "Sleeping", "Waking"}

func (s loopState) String() string {
	if int(s) < len(loopStateNames) {
		return loopStateNames[s]
	}
	return fmt.Sprintf("loopState(%d)", uint8(s))
}

// reset starts a cycle. The loop never resets while it is Sleeping: it
// moves to Waking first when epoll_wait returns.
func (s *poolState) reset() {
	if s.state == stateSleeping {
		panic("iopool: poolState.reset while Sleeping: the loop must move to Waking after epoll_wait")
	}
	s.state = stateRunning
	s.hasDeadline = false
}

// wake records a wake and reports whether the caller must write the
// eventfd.
func (s *poolState) wake() bool {
	switch s.state {
	case stateRunning:
		s.state = stateRunAgain
	case stateSleeping:
		s.state = stateWaking
		return true
	}
	return false
}

// canSleep reports whether the loop may sleep: nobody woke it this cycle.
func (s *poolState) canSleep() bool {
	switch s.state {
	case stateRunning:
		return true
	case stateRunAgain:
		return false
	}
	panic("iopool: poolState.canSleep in state " + s.state.String())
}

// sleep records that the loop goes to epoll_wait until deadline (if has).
func (s *poolState) sleep(deadline int64, has bool) {
	if s.state != stateRunning {
		panic("iopool: poolState.sleep in state " + s.state.String())
	}
	s.state, s.deadline, s.hasDeadline = stateSleeping, deadline, has
}

// harvest moves a loop that is not going to sleep (Running with work
// already known, or RunAgain) to Waking, for a nonblocking epoll_wait: the
// events it returns name ops, so closers must park them as during a sleep,
// and wakers need no eventfd write since the loop is about to run a cycle.
func (s *poolState) harvest() {
	if s.state != stateRunning && s.state != stateRunAgain {
		panic("iopool: poolState.harvest in state " + s.state.String())
	}
	s.state = stateWaking
}

// wakeForTimer reports whether a timer newly armed for deadline must wake
// the loop: only when it sleeps with no timeout or a later one.
func (s *poolState) wakeForTimer(deadline int64) bool {
	if s.state == stateSleeping && (!s.hasDeadline || s.deadline > deadline) {
		s.state = stateWaking
		return true
	}
	return false
}

// isReferencingOps reports whether events fetched by the kernel may still
// name registrations: from the start of a sleep until the next reset.
func (s *poolState) isReferencingOps() bool {
	return s.state == stateSleeping || s.state == stateWaking
}
