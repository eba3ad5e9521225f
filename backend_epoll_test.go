//go:build linux

package iopool

import (
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// wakeBound is how long a wake from another goroutine may take to reach a
// sleeping loop before a test calls it lost: far above any scheduling delay
// of a loaded 2-core machine under -race, far below go test's timeout.
const wakeBound = 5 * time.Second

// waitLoopSleeping returns once p's loop is in the Sleeping state: it has
// decided to block in epoll_wait, so the next wake must write the eventfd.
func waitLoopSleeping(t *testing.T, p *Pool) {
	t.Helper()
	deadline := time.Now().Add(wakeBound)
	for {
		p.mu.Lock()
		st := p.state.state
		p.mu.Unlock()
		if st == stateSleeping {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the loop did not go to sleep within %v (state %v)", wakeBound, st)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// stopLoop ends a pool's Run by calling stop, waits (bounded) for Run's
// result, and closes the pool. A test that failed before leaves the pool
// open instead: when a wake was lost, Close cannot wake the loop either and
// would hang the test binary.
func stopLoop(t *testing.T, p *Pool, ran <-chan error, stop func() error) {
	t.Helper()
	require.NoError(t, stop())
	select {
	case err := <-ran:
		require.NoError(t, err)
	case <-time.After(wakeBound):
		t.Fatalf("lost wake-up: Run did not return within %v of its root task being told to", wakeBound)
	}
	require.NoError(t, p.Close())
}

// The loop sleeps with no deadline; a plain goroutine sends on a Chan the
// root task waits on. The send must wake the loop (one eventfd write per
// sleep) within wakeBound, every time. A lost wake-up (the eventfd write
// dropped, or the state machine not asking for it) fails here by name in
// seconds instead of hanging the package until go test's timeout.
func TestWakeFromAnotherGoroutineReachesSleepingLoop(t *testing.T) {
	p, err := New()
	require.NoError(t, err)
	ch := NewChan[int]()
	answers := make(chan int, 1)
	ran := make(chan error, 1)
	go func() {
		ran <- p.Run(func(tk *Task) error {
			for {
				v, err := ch.Recv(tk)
				if err != nil || v < 0 {
					return err
				}
				answers <- v
			}
		})
	}()
	const rounds = 20
	for i := range rounds {
		waitLoopSleeping(t, p)
		before := p.Stats()
		require.NoError(t, ch.Send(i))
		select {
		case v := <-answers:
			require.Equal(t, i, v)
		case err := <-ran:
			t.Fatalf("round %d: Run returned early: %v", i, err)
		case <-time.After(wakeBound):
			t.Fatalf("round %d: lost wake-up: a Chan.Send from another goroutine did not wake the sleeping loop within %v "+
				"(the Sleeping→Waking wake must write the eventfd: poolState.wake, epollBackend.wake); stats before %+v, now %+v",
				i, wakeBound, before, p.Stats())
		}
		after := p.Stats()
		require.Equal(t, before.EventfdWrites+1, after.EventfdWrites, "round %d: one eventfd write wakes one sleep", i)
	}
	stopLoop(t, p, ran, func() error { return ch.Send(-1) })
}

// The loop sleeps with no deadline; a plain goroutine arms a timer 10 ms
// ahead. The loop must wake to shorten its sleep (wakeForTimer) and fire the
// timer, well within wakeBound.
func TestTimerArmedFromAnotherGoroutineWakesSleepingLoop(t *testing.T) {
	p, err := New()
	require.NoError(t, err)
	stop := NewOneshot[struct{}]()
	ran := make(chan error, 1)
	go func() {
		ran <- p.Run(func(tk *Task) error {
			_, err := stop.Recv(tk)
			return err
		})
	}()
	tm := p.Driver().NewTimer()
	fired := make(chan struct{}, 1)
	cx := NewPollContext(WakerFunc(func() {
		select {
		case fired <- struct{}{}:
		default:
		}
	}))
	for i := range 5 {
		waitLoopSleeping(t, p)
		deadline := time.Now().Add(10 * time.Millisecond)
		_, ready := tm.PollTimer(cx, deadline)
		require.False(t, ready, "round %d: the deadline is ahead", i)
		select {
		case <-fired:
		case <-time.After(wakeBound):
			t.Fatalf("round %d: lost wake-up: a timer armed 10ms ahead from another goroutine did not fire within %v: "+
				"the sleeping loop was not woken to shorten its sleep (poolState.wakeForTimer, epollBackend.wake); stats %+v",
				i, wakeBound, p.Stats())
		}
		now, ready := tm.PollTimer(cx, deadline)
		require.True(t, ready, "round %d: fired, so ready", i)
		require.False(t, now.Before(deadline), "round %d: fired at %v, before its deadline %v", i, now, deadline)
	}
	stopLoop(t, p, ran, func() error { return stop.Send(struct{}{}) })
}

// The epoll data codec: the 64 data bits of an epoll event, through x/sys's
// EpollEvent, whose layout differs per architecture (12 bytes with the data
// unaligned at offset 4 on amd64, where the kernel packs the struct; 16 with
// the data at 8 elsewhere).
func TestEventDataLayoutForThisArch(t *testing.T) {
	parallel(t)
	size, dataOff := uintptr(16), uintptr(8)
	if runtime.GOARCH == "amd64" {
		size, dataOff = 12, 4
	}
	var ev unix.EpollEvent
	t.Logf("GOARCH=%s: EpollEvent is %d bytes, data at offset %d", runtime.GOARCH, unsafe.Sizeof(ev), unsafe.Offsetof(ev.Fd))
	require.Equal(t, size, unsafe.Sizeof(ev), "struct epoll_event size on %s", runtime.GOARCH)
	require.Equal(t, dataOff, unsafe.Offsetof(ev.Fd), "epoll data offset on %s", runtime.GOARCH)
	require.Equal(t, dataOff+4, unsafe.Offsetof(ev.Pad))
}

func TestEventDataRoundTrips(t *testing.T) {
	parallel(t)
	for _, data := range []uint64{tokenWake, tokenRing, 2, 1<<32 - 1, 1 << 32, 0xdead_beef_0000_1234, 1<<63 | 7, ^uint64(0)} {
		var ev unix.EpollEvent
		ev.Events = unix.EPOLLIN
		setEventData(&ev, data)
		require.Equal(t, data, eventData(&ev), "%#x", data)
		require.Equal(t, uint32(unix.EPOLLIN), ev.Events, "the data must not spill into the events")
	}
	require.Equal(t, PollIn|PollRdHup, pollEventsFromEpoll(0x1|0x2000|0x80000000), "unknown bits are dropped")
}

// The kernel hands the token back unchanged: an eventfd registered through
// the backend with an op's address as its token comes back from wait with
// that address and its events, on this architecture's real layout.
func TestBackendHandsTheTokenBackThroughTheKernel(t *testing.T) {
	parallel(t)
	var b epollBackend
	require.NoError(t, b.open(nil, 4))
	defer b.close()
	efd, err := unix.Eventfd(1, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	require.NoError(t, err)
	defer unix.Close(efd)

	op := &fdRegistration{}
	var pin runtime.Pinner
	pin.Pin(op) // the kernel holds the address
	defer pin.Unpin()
	token := tokenOf(unsafe.Pointer(op))
	require.NoError(t, b.add(efd, PollIn, token))

	n, err := b.wait(int64(time.Second))
	require.NoError(t, err)
	require.Equal(t, 1, n)
	got, events := b.event(0)
	require.Equal(t, token, got)
	require.Equal(t, PollIn, events)
	require.Same(t, op, (*fdRegistration)(pointerOf(got)))
}
