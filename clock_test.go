//go:build linux

package iopool

import (
	"context"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestVirtualClockHourInUnderASecond: an hour and more of sleeps, ticks and
// a socket read deadline, each ending at its exact virtual instant, in well
// under a second of real time.
func TestVirtualClockHourInUnderASecond(t *testing.T) {
	wall := time.Now()
	runPool(t, func(tk *Task) error {
		start := tk.Now()
		require.Equal(t, virtualEpoch, start, "a virtual clock starts at its fixed instant")

		require.NoError(t, tk.Sleep(30*time.Minute))
		require.Equal(t, 30*time.Minute, tk.Now().Sub(start), "Sleep")

		require.NoError(t, tk.SleepUntil(start.Add(40*time.Minute)))
		require.Equal(t, 40*time.Minute, tk.Now().Sub(start), "SleepUntil")

		tick, err := tk.Driver().NewTicker(5 * time.Minute)
		require.NoError(t, err)
		for i := 1; i <= 3; i++ {
			missed, err := tick.Next(tk)
			require.NoError(t, err)
			require.Zero(t, missed)
			require.Equal(t, 40*time.Minute+time.Duration(i)*5*time.Minute, tk.Now().Sub(start), "tick %d", i)
		}
		tick.Stop()

		fds := socketpair(t)
		defer unix.Close(fds[1])
		s, err := tk.Driver().NewSocket(fds[0])
		require.NoError(t, err)
		defer s.Close()
		before := tk.Now()
		require.NoError(t, s.SetReadDeadline(before.Add(10*time.Minute)))
		_, err = s.Read(tk, make([]byte, 8))
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
		require.Equal(t, 10*time.Minute, tk.Now().Sub(before), "read deadline")

		tm := tk.Driver().NewTimer()
		fired, err := Await[time.Time](tk, tm.Future(start.Add(66*time.Minute)))
		require.NoError(t, err)
		require.Equal(t, start.Add(66*time.Minute), fired, "a Timer fires with the pool's time")
		require.Equal(t, 66*time.Minute, tk.Now().Sub(start))
		return nil
	}, WithVirtualClock())
	require.Less(t, time.Since(wall), time.Second, "an hour of virtual time in real time")
}

// TestVirtualClockWakeOrder: 200 tasks sleeping random virtual durations
// (many equal) wake in order of their deadlines, and those due at the same
// instant in the order they went to sleep, each at its exact instant.
func TestVirtualClockWakeOrder(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	const n = 200
	sleeps := make([]time.Duration, n)
	for i := range sleeps {
		sleeps[i] = time.Duration(rng.IntN(50)) * time.Second
	}
	type wake struct {
		task int
		at   time.Duration
	}
	var woke []wake
	runPool(t, func(tk *Task) error {
		start := tk.Now()
		hs := make([]*Handle[struct{}], n)
		for i := range hs {
			hs[i] = Spawn(tk.Driver(), "sleeper", func(t *Task) (struct{}, error) {
				err := t.Sleep(sleeps[i])
				woke = append(woke, wake{i, t.Now().Sub(start)})
				return struct{}{}, err
			})
		}
		for _, h := range hs {
			if _, err := h.Join(tk); err != nil {
				return err
			}
		}
		return nil
	}, WithVirtualClock())
	want := make([]wake, n)
	for i := range want {
		want[i] = wake{i, sleeps[i]}
	}
	// Tasks go to sleep in spawn order: a stable sort by duration.
	slices.SortStableFunc(want, func(a, b wake) int { return int(a.at - b.at) })
	require.Equal(t, want, woke)
}

// TestVirtualClockContextDeadline: a SpawnContext task on a virtual pool is
// canceled when the pool's clock reaches the context's deadline.
func TestVirtualClockContextDeadline(t *testing.T) {
	runPool(t, func(tk *Task) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		start := tk.Now()
		h := SpawnContext(tk.Driver(), ctx, "slow", func(t *Task) (time.Duration, error) {
			err := t.Sleep(2 * time.Hour)
			return t.Now().Sub(start), err
		})
		took, err := h.Join(tk)
		require.ErrorIs(t, err, ErrCanceled)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.NoError(t, ctx.Err(), "the context itself runs on real time")
		// Converted from its monotonic reading at spawn: nanoseconds short.
		require.InDelta(t, float64(time.Hour), float64(took), float64(time.Second))

		// A task that finishes first stops its deadline timer: the clock
		// does not jump to it.
		ctx2, cancel2 := context.WithTimeout(context.Background(), 3*time.Hour)
		defer cancel2()
		at := tk.Now()
		_, err = SpawnContext(tk.Driver(), ctx2, "quick", func(t *Task) (int, error) {
			return 0, t.Sleep(time.Minute)
		}).Join(tk)
		require.NoError(t, err)
		require.NoError(t, tk.Sleep(time.Second))
		require.Equal(t, time.Minute+time.Second, tk.Now().Sub(at))
		return nil
	}, WithVirtualClock())
}

// TestVirtualClockRealTimeDeadlineIsADuration: a time read from the real
// clock (time.Now().Add(d), as net/http and context.WithTimeout make them)
// means d from now on a virtual pool.
func TestVirtualClockRealTimeDeadlineIsADuration(t *testing.T) {
	runPool(t, func(tk *Task) error {
		start := tk.Now()
		require.NoError(t, tk.SleepUntil(time.Now().Add(time.Hour)))
		require.InDelta(t, float64(time.Hour), float64(tk.Now().Sub(start)), float64(time.Second))
		// Before the virtual epoch: passed.
		at := tk.Now()
		require.NoError(t, tk.SleepUntil(time.Unix(0, 0)))
		require.Equal(t, at, tk.Now())
		return nil
	}, WithVirtualClock())
}

// TestVirtualClockNetConnDeadline: a goroutine reading a NetConn of a
// virtual pool times out when the pool's clock reaches its deadline.
// virtualNetConn returns a pool with a virtual clock, not running, and a
// NetConn on it over a socketpair whose other end stays silent; all are
// closed when the test ends.
func virtualNetConn(t *testing.T) (*Pool, *NetConn) {
	t.Helper()
	fds := socketpair(t)
	p, err := New(WithVirtualClock())
	require.NoError(t, err)
	c, err := p.Driver().NewNetConn(fds[0])
	require.NoError(t, err)
	t.Cleanup(func() {
		c.Close()
		p.Close()
		unix.Close(fds[1])
	})
	return p, c
}

func TestVirtualClockNetConnDeadline(t *testing.T) {
	p, c := virtualNetConn(t)
	require.NoError(t, c.SetReadDeadline(p.Now().Add(45*time.Minute)))
	type result struct {
		err error
		at  time.Time
	}
	read := make(chan result, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		read <- result{err, p.Now()}
	}()
	waitForIOWait(t) // the virtual clock runs the Run below in microseconds
	require.NoError(t, p.Run(func(tk *Task) error {
		return tk.Sleep(time.Hour)
	}))
	var r result
	select {
	case r = <-read:
	case <-time.After(watchdog): // a lost deadline leaves the read waiting forever
		t.Fatal("the read did not end: the deadline never reached it")
	}
	require.ErrorIs(t, r.err, os.ErrDeadlineExceeded)
	require.WithinRange(t, r.at, virtualEpoch.Add(45*time.Minute), virtualEpoch.Add(time.Hour))
}

// TestVirtualClockUringInFlightRunsAtRealSpeed: while an io_uring read is
// in flight a virtual pool's clock advances with real time, up to the next
// timer exactly.
func TestVirtualClockUringInFlightRunsAtRealSpeed(t *testing.T) {
	var fds [2]int
	require.NoError(t, unix.Pipe2(fds[:], unix.O_CLOEXEC))
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	runPool(t, func(tk *Task) error {
		u := requireUring(t, tk.Driver())
		reader := Spawn(tk.Driver(), "reader", func(t *Task) (int, error) {
			return u.Read(t, fds[0], make([]byte, 1), -1)
		})
		require.NoError(t, tk.Yield()) // the read is submitted
		start, wall := tk.Now(), time.Now()
		require.NoError(t, tk.Sleep(20*time.Millisecond))
		require.Equal(t, 20*time.Millisecond, tk.Now().Sub(start), "the timer fires at its instant")
		require.GreaterOrEqual(t, time.Since(wall), 20*time.Millisecond, "in real time")
		_, err := unix.Write(fds[1], []byte{1})
		require.NoError(t, err)
		n, err := reader.Join(tk)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		// Nothing in flight: jumps again.
		wall = time.Now()
		require.NoError(t, tk.Sleep(time.Hour))
		require.Less(t, time.Since(wall), 10*time.Second)
		return nil
	}, WithVirtualClock())
}

func TestVirtualClockWithGroup(t *testing.T) {
	g, err := NewGroup(2, WithVirtualClock())
	require.NoError(t, err)
	defer g.Close()
	for i := range g.Len() {
		require.Equal(t, virtualEpoch, g.Pool(i).Now())
	}
}

func TestHasMonotonicAndSatAdd(t *testing.T) {
	require.True(t, hasMonotonic(time.Now()))
	require.True(t, hasMonotonic(time.Now().Add(time.Hour)))
	require.False(t, hasMonotonic(time.Now().Round(0)))
	require.False(t, hasMonotonic(virtualEpoch.Add(time.Hour)))
	require.False(t, hasMonotonic(time.Unix(5, 0)))
	for _, c := range []struct{ a, b, want int64 }{
		{1, 2, 3},
		{1 << 62, 1 << 62, 1<<63 - 1},
		{-1 << 62, -1<<62 - 1, -1 << 63},
		{1<<63 - 1, -1, 1<<63 - 2},
	} {
		require.Equal(t, c.want, satAdd(c.a, c.b), "satAdd(%d, %d)", c.a, c.b)
	}
}

// TestVirtualClockAfter: Driver.After times a Select out on the pool's
// clock, exactly.
func TestVirtualClockAfter(t *testing.T) {
	runPool(t, func(tk *Task) error {
		start := tk.Now()
		never := NewChan[int]()
		tm := tk.Driver().After(90 * time.Second)
		i, err := Select(tk, Case[int](never, nil), Case[time.Time](tm, nil))
		require.NoError(t, err)
		require.Equal(t, 1, i)
		require.Equal(t, 90*time.Second, tk.Now().Sub(start))
		return nil
	}, WithVirtualClock())
}
