package iopool

// TEMPORARY minimal version; replaced by the full state machine.
type loopState uint8

const (
	stateRunning loopState = iota
	stateRunAgain
	stateSleeping
	stateWaking
)

type poolState struct {
	state       loopState
	deadline    int64
	hasDeadline bool
}

func (s *poolState) reset() {
	if s.state == stateSleeping {
		panic("iopool: reset while sleeping")
	}
	s.state = stateRunning
}

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

func (s *poolState) canSleep() bool { return s.state == stateRunning }

func (s *poolState) sleep(deadline int64, has bool) {
	s.state, s.deadline, s.hasDeadline = stateSleeping, deadline, has
}

func (s *poolState) wakeForTimer(deadline int64) bool {
	if s.state == stateSleeping && (!s.hasDeadline || s.deadline > deadline) {
		s.state = stateWaking
		return true
	}
	return false
}

func (s *poolState) isReferencingOps() bool {
	return s.state == stateSleeping || s.state == stateWaking
}
