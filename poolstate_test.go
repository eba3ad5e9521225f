//go:build linux

package iopool

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPoolStateWake(t *testing.T) {
	parallel(t)
	for _, tc := range []struct {
		from, want loopState
		signal     bool
	}{
		{stateRunning, stateRunAgain, false},
		{stateRunAgain, stateRunAgain, false},
		{stateSleeping, stateWaking, true},
		{stateWaking, stateWaking, false},
	} {
		s := poolState{state: tc.from}
		got := s.wake()
		require.Equal(t, tc.signal, got, "wake from %v: signal", tc.from)
		require.Equal(t, tc.want, s.state, "wake from %v: state", tc.from)
	}
}

func TestPoolStateWakeForTimer(t *testing.T) {
	parallel(t)
	for _, tc := range []struct {
		s      poolState
		timer  int64
		want   loopState
		signal bool
	}{
		{poolState{state: stateRunning}, 5, stateRunning, false},
		{poolState{state: stateRunAgain}, 5, stateRunAgain, false},
		{poolState{state: stateWaking}, 5, stateWaking, false},
		{poolState{state: stateSleeping}, 5, stateWaking, true}, // sleeping forever
		{poolState{state: stateSleeping, deadline: 10, hasDeadline: true}, 5, stateWaking, true},
		{poolState{state: stateSleeping, deadline: 10, hasDeadline: true}, 10, stateSleeping, false},
		{poolState{state: stateSleeping, deadline: 10, hasDeadline: true}, 15, stateSleeping, false},
	} {
		s := tc.s
		got := s.wakeForTimer(tc.timer)
		require.Equal(t, tc.signal, got, "%+v wakeForTimer(%d): signal", tc.s, tc.timer)
		require.Equal(t, tc.want, s.state, "%+v wakeForTimer(%d): state", tc.s, tc.timer)
	}
}

func TestPoolStateCanSleep(t *testing.T) {
	parallel(t)
	require.True(t, (&poolState{state: stateRunning}).canSleep())
	require.False(t, (&poolState{state: stateRunAgain}).canSleep())
	require.Panics(t, func() { (&poolState{state: stateSleeping}).canSleep() })
	require.Panics(t, func() { (&poolState{state: stateWaking}).canSleep() })
}

func TestPoolStateSleep(t *testing.T) {
	parallel(t)
	s := poolState{state: stateRunning}
	s.sleep(42, true)
	require.Equal(t, poolState{state: stateSleeping, deadline: 42, hasDeadline: true}, s)
	for _, from := range []loopState{stateRunAgain, stateSleeping, stateWaking} {
		require.Panics(t, func() { (&poolState{state: from}).sleep(1, true) }, "sleep from %v", from)
	}
}

func TestPoolStateReset(t *testing.T) {
	parallel(t)
	for _, from := range []loopState{stateRunning, stateRunAgain, stateWaking} {
		s := poolState{state: from}
		s.reset()
		require.Equal(t, stateRunning, s.state, "reset from %v", from)
	}
	require.Panics(t, func() { (&poolState{state: stateSleeping}).reset() })
}

func TestPoolStateHarvest(t *testing.T) {
	parallel(t)
	for _, from := range []loopState{stateRunning, stateRunAgain} {
		s := poolState{state: from}
		s.harvest()
		require.Equal(t, stateWaking, s.state, "harvest from %v", from)
		require.False(t, s.wake(), "a harvesting loop needs no eventfd write")
		require.True(t, s.isReferencingOps(), "events of a harvest name ops")
	}
	for _, from := range []loopState{stateSleeping, stateWaking} {
		require.Panics(t, func() { (&poolState{state: from}).harvest() }, "harvest from %v", from)
	}
}

func TestPoolStateIsReferencingOps(t *testing.T) {
	parallel(t)
	for st, want := range map[loopState]bool{stateRunning: false, stateRunAgain: false, stateSleeping: true, stateWaking: true} {
		require.Equal(t, want, (&poolState{state: st}).isReferencingOps(), "%v", st)
	}
	require.Equal(t, "Sleeping", stateSleeping.String())
	require.Equal(t, "loopState(9)", loopState(9).String())
}

// runPoolStateOps drives the state machine like the loop and its wakers do,
// choosing each step from ops, and checks the invariants in both
// directions: at most one eventfd write per sleep, and a sleeping loop that
// is woken (by a wake, or by a timer earlier than its deadline) gets that
// write; a loop woken while running never sleeps, and a sleep is always
// followed by Waking.
func runPoolStateOps(t *testing.T, ops []byte) {
	var s poolState
	writes := 0
	woken := false // a wake arrived during the running cycle
	for _, op := range ops {
		switch op % 6 {
		case 0, 1: // another goroutine wakes the loop
			wasSleeping := s.state == stateSleeping
			signal := s.wake()
			require.Equal(t, wasSleeping, signal, "a wake writes the eventfd if and only if the loop is Sleeping (lost wake-up when it does not)")
			if signal {
				writes++
			}
			if !s.isReferencingOps() {
				woken = true
			}
		case 2: // a timer is armed
			d := int64(op)
			before := s
			mustWake := before.state == stateSleeping && (!before.hasDeadline || before.deadline > d)
			signal := s.wakeForTimer(d)
			require.Equal(t, mustWake, signal, "wakeForTimer(%d) on %+v: a loop sleeping past the timer gets the write, no other", d, before)
			if signal {
				writes++
			}
		case 3: // the loop ends its cycle: sleep if it can
			if s.isReferencingOps() {
				// Back from epoll_wait: Sleeping→Waking, then a new cycle.
				s.wake()
				require.Equal(t, stateWaking, s.state)
				s.reset()
				writes, woken = 0, false
				continue
			}
			if s.canSleep() {
				require.False(t, woken, "a loop woken while running must not sleep")
				s.sleep(int64(op)*3, op%2 == 0)
			} else {
				s.reset()
				woken = false
			}
		case 4: // the loop starts a new cycle (when not sleeping)
			if !s.isReferencingOps() {
				s.reset()
				woken = false
			}
		case 5: // a loop that has not slept for a while looks at epoll without blocking
			if !s.isReferencingOps() {
				s.harvest()
				require.Equal(t, stateWaking, s.state)
				// It dispatches, then starts a new cycle: a wake that
				// arrived while it ran is honored by that cycle.
			}
		}
		require.LessOrEqual(t, writes, 1, "at most one eventfd write per sleep")
	}
}

func TestPoolStateRandomSequences(t *testing.T) {
	parallel(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	for i := range 2000 {
		ops := make([]byte, 1+rng.IntN(64))
		for j := range ops {
			ops[j] = byte(rng.UintN(256))
		}
		t.Run(fmt.Sprint(i), func(t *testing.T) { runPoolStateOps(t, ops) })
	}
}

func FuzzPoolState(f *testing.F) {
	f.Add([]byte{0, 3, 0, 0, 2, 3, 4})
	f.Add([]byte{3, 2, 2, 0, 3, 3, 1, 4, 3})
	f.Fuzz(runPoolStateOps)
}
