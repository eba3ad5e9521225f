//go:build linux

package iopool

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/sys"
)

func TestReadinessOfEachFdKind(t *testing.T) {
	runPool(t, func(tk *Task) error {
		drv := tk.Driver()
		check := func(name string, fd int, trigger func()) {
			fr, err := drv.NewFdReady(fd)
			require.NoError(t, err, name)
			defer fr.Close()
			go trigger()
			ev, err := fr.WaitReady(tk, SlotRead, PollIn)
			require.NoError(t, err, name)
			require.NotZero(t, ev&PollIn, "%s: %v", name, ev)
		}
		var p [2]int
		require.NoError(t, unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC))
		check("pipe", p[0], func() { unix.Write(p[1], []byte("x")) })
		unix.Close(p[0])
		unix.Close(p[1])

		sp := socketpair(t)
		check("socketpair", sp[0], func() { unix.Write(sp[1], []byte("x")) })
		unix.Close(sp[0])
		unix.Close(sp[1])

		efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		require.NoError(t, err)
		check("eventfd", efd, func() { sys.EventfdSignal(nil, efd) })
		unix.Close(efd)

		tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
		require.NoError(t, err)
		check("timerfd", tfd, func() {
			spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(time.Millisecond))}
			unix.TimerfdSettime(tfd, 0, &spec, nil)
		})
		unix.Close(tfd)

		// The write slot of a fresh socket is ready at once.
		fresh := socketpair(t)
		fr, err := drv.NewFdReady(fresh[0])
		require.NoError(t, err)
		ev, err := fr.WaitReady(tk, SlotWrite, PollOut)
		require.NoError(t, err)
		require.NotZero(t, ev&PollOut)
		require.NoError(t, fr.Close())
		unix.Close(fresh[0])
		unix.Close(fresh[1])
		return nil
	})
}

func TestNewFdReadyBadInput(t *testing.T) {
	runPool(t, func(tk *Task) error {
		drv := tk.Driver()
		_, err := drv.NewFdReady(987654)
		require.ErrorIs(t, err, unix.EBADF)
		require.ErrorContains(t, err, "fd 987654")

		sp := socketpair(t)
		defer unix.Close(sp[0])
		defer unix.Close(sp[1])
		fr, err := drv.NewFdReady(sp[0])
		require.NoError(t, err)
		defer fr.Close()
		_, err = drv.NewFdReady(sp[0])
		require.ErrorIs(t, err, unix.EEXIST)
		require.ErrorContains(t, err, "fd "+strconv.Itoa(sp[0]))

		f, err := os.CreateTemp(t.TempDir(), "regular")
		require.NoError(t, err)
		defer f.Close()
		_, err = drv.NewFdReady(int(f.Fd()))
		require.ErrorIs(t, err, unix.EPERM)
		require.ErrorContains(t, err, "fd "+strconv.Itoa(int(f.Fd())))

		// The pool keeps running.
		require.NoError(t, tk.Sleep(time.Millisecond))
		require.EqualValues(t, 1, tk.Driver().Pool().Stats().FdsRegistered)
		return nil
	})
}

// Closing an fd before its FdReady must not remove the registration of the
// file that reuses its number.
func TestRegressionStaleFdReadyCloseKeepsReusedRegistration(t *testing.T) {
	runPool(t, func(tk *Task) error {
		drv := tk.Driver()
		a := socketpair(t)
		stale, err := drv.NewFdReady(a[0])
		require.NoError(t, err)
		unix.Close(a[0]) // the caller bug: fd closed first (a[1] keeps the pair alive)

		b := socketpair(t) // reuses a[0]'s number
		defer unix.Close(b[1])
		defer unix.Close(b[0])
		require.Equal(t, a[0], b[0], "the fd number is reused")
		fresh, err := drv.NewFdReady(b[0])
		require.NoError(t, err)
		defer fresh.Close()

		err = stale.Close()
		require.ErrorIs(t, err, ErrFdClosedFirst)
		require.ErrorContains(t, err, "fd "+strconv.Itoa(a[0]))

		_, err = unix.Write(b[1], []byte("still here"))
		require.NoError(t, err)
		ev, err := fresh.WaitReady(tk, SlotRead, PollIn)
		require.NoError(t, err)
		require.NotZero(t, ev&PollIn, "the new registration still receives events")
		unix.Close(a[1])
		return nil
	})
}

func TestRegressionFdReadyCloseAfterPoolClose(t *testing.T) {
	requireNoLeaks(t)
	p, err := New()
	require.NoError(t, err)
	sp := socketpair(t)
	defer unix.Close(sp[0])
	defer unix.Close(sp[1])
	fr, err := p.Driver().NewFdReady(sp[0])
	require.NoError(t, err)
	require.NoError(t, p.Close())

	// A new pool likely reuses the old epoll fd's number; register the same
	// fd there and check that closing the stale FdReady leaves it alone.
	q := newTestPool(t)
	fresh, err := q.Driver().NewFdReady(sp[0])
	require.NoError(t, err)
	defer fresh.Close()
	require.NoError(t, fr.Close())
	require.NoError(t, q.Run(func(tk *Task) error {
		unix.Write(sp[1], []byte("x"))
		_, err := fresh.WaitReady(tk, SlotRead, PollIn)
		return err
	}))
}

// Scenario 3: NewFdReady racing Pool.Close, with a second pool created right
// after that gets the first one's epoll fd number. The registration never
// lands in the second pool's epoll set; after Close NewFdReady fails with
// ErrClosed.
func TestRegressionNewFdReadyRacingCloseSparesNextPool(t *testing.T) {
	requireNoLeaks(t)
	pair := socketpair(t)
	defer unix.Close(pair[0])
	defer unix.Close(pair[1])
	fs := new(sys.Faults)
	p, err := New(withFaults(fs))
	require.NoError(t, err)
	epfd := poolEpollFd(p)
	pa := pauseFirst(t, fs, sys.CallEpollCtl)
	type result struct {
		fr  *FdReady
		err error
	}
	registered := make(chan result, 1)
	go func() {
		fr, err := p.Driver().NewFdReady(pair[0])
		registered <- result{fr, err}
	}()
	pa.waitReached(t)

	var next *Pool
	closeWhilePaused(t, p, pa, func() { next = newPoolWithEpollFd(t, epfd) })
	r := <-registered
	if r.err == nil {
		require.NoError(t, r.fr.Close())
	} else {
		require.ErrorIs(t, r.err, ErrClosed)
	}
	if next == nil {
		next = newPoolWithEpollFd(t, epfd)
	}
	require.NotContains(t, epollTargets(t, poolEpollFd(next)), pair[0],
		"a registration of the closed pool landed in the next pool's epoll set")
	require.NoError(t, next.Close())

	_, err = p.Driver().NewFdReady(pair[0])
	require.ErrorIs(t, err, ErrClosed)
}

// Scenario 3: FdReady.Close racing Pool.Close, with a second pool that got
// the first one's epoll fd number and watches the same fd. The first pool's
// EPOLL_CTL_DEL never removes the second pool's registration.
func TestRegressionFdReadyCloseRacingPoolCloseSparesNextPool(t *testing.T) {
	requireNoLeaks(t)
	pair := socketpair(t)
	defer unix.Close(pair[0])
	defer unix.Close(pair[1])
	fs := new(sys.Faults)
	p, err := New(withFaults(fs))
	require.NoError(t, err)
	epfd := poolEpollFd(p)
	fr, err := p.Driver().NewFdReady(pair[0])
	require.NoError(t, err)
	pa := pauseFirst(t, fs, sys.CallEpollCtl)
	frClosed := make(chan error, 1)
	go func() { frClosed <- fr.Close() }()
	pa.waitReached(t)

	var next *Pool
	var nextFr *FdReady
	closeWhilePaused(t, p, pa, func() {
		next = newPoolWithEpollFd(t, epfd)
		nextFr, err = next.Driver().NewFdReady(pair[0])
		require.NoError(t, err)
	})
	require.NoError(t, <-frClosed)
	if next == nil {
		next = newPoolWithEpollFd(t, epfd)
		nextFr, err = next.Driver().NewFdReady(pair[0])
		require.NoError(t, err)
	}
	require.Contains(t, epollTargets(t, poolEpollFd(next)), pair[0],
		"the closed pool's EPOLL_CTL_DEL removed the next pool's registration")
	require.NoError(t, nextFr.Close())
	require.NoError(t, next.Close())
}

// Regression: a second task waiting on the same slot of one FdReady
// replaced the first one's waker, and the first never woke. Several waiters
// are supported: the slot's next readiness wakes them all.
func TestRegressionTwoWaitersOnOneSlotBothWake(t *testing.T) {
	within(t, 10*time.Second, func() { twoWaitersOnOneSlot(t) })
}

func twoWaitersOnOneSlot(t *testing.T) {
	runPool(t, func(tk *Task) error {
		efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		require.NoError(t, err)
		defer unix.Close(efd)
		fr, err := tk.Driver().NewFdReady(efd)
		require.NoError(t, err)
		defer fr.Close()
		var hs []*Handle[PollEvents]
		for _, name := range []string{"first", "second", "third"} {
			hs = append(hs, Spawn(tk.Driver(), name, func(t *Task) (PollEvents, error) {
				return fr.WaitReady(t, SlotRead, PollIn)
			}))
		}
		require.NoError(t, tk.Sleep(time.Millisecond)) // all three wait now
		_, err = unix.Write(efd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		require.NoError(t, err)
		for _, h := range hs {
			ev, err := h.Join(tk)
			require.NoError(t, err, "task %q", h.Task().Name())
			require.Equal(t, PollIn, ev)
		}
		return nil
	})
}
