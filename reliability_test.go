//go:build linux

package iopool

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/sys"
)

// openFds counts the process's open fds.
func openFds(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(ents)
}

// requireNoLeaks records the open fds and goroutines now and fails the test
// if more remain at its end (goroutines get a short grace period to exit).
// In a test running in parallel it checks nothing: the counts are the
// process's; parallel checks the parallel tests together.
func requireNoLeaks(t *testing.T) {
	t.Helper()
	if parallelRunning() {
		return
	}
	fds, gs := openFds(t), runtime.NumGoroutine()
	t.Cleanup(func() {
		require.LessOrEqual(t, openFds(t), fds, "open fds after the test")
		deadline := time.Now().Add(2 * time.Second)
		for runtime.NumGoroutine() > gs && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > gs {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after:\n%s", gs, n, buf[:runtime.Stack(buf, true)])
		}
	})
}

// stressDuration is a few hundred milliseconds in CI and IOPOOL_STRESS
// (e.g. "60s") for a long run.
func stressDuration(t *testing.T) time.Duration {
	if v := os.Getenv("IOPOOL_STRESS"); v != "" {
		d, err := time.ParseDuration(v)
		require.NoError(t, err, "IOPOOL_STRESS")
		return d
	}
	if testing.Short() {
		return 100 * time.Millisecond
	}
	return 700 * time.Millisecond
}

func TestCloseReleasesEveryFdAndGoroutine(t *testing.T) {
	requireNoLeaks(t)
	for range 20 {
		p, err := New()
		require.NoError(t, err)
		require.NoError(t, p.Run(func(tk *Task) error {
			for range 5 {
				Spawn(p.Driver(), "leftover", func(t *Task) (int, error) { return 0, t.Sleep(time.Hour) })
			}
			var fds [2]int
			require.NoError(t, unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC))
			fr, err := p.Driver().NewFdReady(fds[0])
			require.NoError(t, err)
			require.NoError(t, fr.Close())
			unix.Close(fds[0])
			unix.Close(fds[1])
			return tk.Sleep(time.Millisecond)
		}))
		require.NoError(t, p.Close())
	}
}

// TestLostWakeupStress: goroutines wake, spawn into, send to and cancel
// tasks of one pool at random while it sleeps and wakes. Every message
// sent is received, every spawned task is joined, nothing deadlocks, and
// the loop never writes its eventfd more than once per sleep.
func TestLostWakeupStress(t *testing.T) {
	requireNoLeaks(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	p, err := New()
	require.NoError(t, err)
	drv := p.Driver()
	const producers = 8
	ch := NewChan[int]()
	var sent, spawned, joined, canceled atomic.Int64
	stop := time.Now().Add(stressDuration(t))

	var wg sync.WaitGroup
	sendErrs := make(chan error, producers) // checked by the test's goroutine
	for g := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(g)))
			for time.Now().Before(stop) {
				switch rng.IntN(4) {
				case 0:
					if err := ch.Send(1); err != nil {
						sendErrs <- fmt.Errorf("producer %d: Send: %w", g, err)
						return
					}
					sent.Add(1)
				case 1:
					spawned.Add(1)
					h := Spawn(drv, "short", func(t *Task) (int, error) {
						return 1, t.Sleep(time.Duration(rng.IntN(50)) * time.Microsecond)
					})
					if _, err := h.Wait(); err == nil {
						joined.Add(1)
					}
				case 2:
					spawned.Add(1)
					h := Spawn(drv, "victim", func(t *Task) (int, error) { return 0, t.Sleep(time.Hour) })
					h.Cancel()
					if _, err := h.Wait(); errors.Is(err, ErrCanceled) {
						canceled.Add(1)
					}
				case 3:
					time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
				}
			}
		}()
	}
	producersDone := make(chan struct{})
	go func() { wg.Wait(); ch.Close(); close(producersDone) }()

	var received int64
	runErr := make(chan error, 1)
	go func() {
		runErr <- p.Run(func(tk *Task) error {
			for {
				v, err := ch.Recv(tk)
				if errors.Is(err, ErrChannelClosed) {
					return nil
				}
				if err != nil {
					return err
				}
				received += int64(v)
			}
		})
	}()
	select {
	case err := <-runErr:
		require.NoError(t, err)
	case <-time.After(stressDuration(t) + 20*time.Second):
		t.Fatal("deadlock: the pool stopped making progress")
	}
	<-producersDone
	close(sendErrs)
	for err := range sendErrs {
		require.NoError(t, err)
	}
	require.Equal(t, sent.Load(), received, "every message sent is received")
	require.Equal(t, spawned.Load(), joined.Load()+canceled.Load(), "every task finished")
	st := p.Stats()
	t.Logf("sent %d, spawned %d, canceled %d, stats %+v", sent.Load(), spawned.Load(), canceled.Load(), st)
	require.LessOrEqual(t, st.EventfdWrites, st.Sleeps, "at most one eventfd write per sleep")
	require.NoError(t, p.Close())
}

// TestCloseFromAnotherGoroutineDuringLoad closes a busy pool: Run returns
// ErrClosed, every task finished with ErrCanceled or its own result.
func TestCloseFromAnotherGoroutineDuringLoad(t *testing.T) {
	requireNoLeaks(t)
	p, err := New()
	require.NoError(t, err)
	drv := p.Driver()
	var handles []*Handle[int]
	var mu sync.Mutex
	runErr := make(chan error, 1)
	go func() {
		runErr <- p.Run(func(tk *Task) error {
			for i := 0; ; i++ {
				h := Spawn(drv, "worker"+strconv.Itoa(i), func(t *Task) (int, error) {
					for {
						if err := t.Sleep(50 * time.Microsecond); err != nil {
							return 0, err
						}
					}
				})
				mu.Lock()
				handles = append(handles, h)
				mu.Unlock()
				if err := tk.Sleep(100 * time.Microsecond); err != nil {
					return err
				}
			}
		})
	}()
	// Close once the load is on: a few workers spawned (not after a sleep
	// that a slow machine could lose).
	spawned := func() int { mu.Lock(); defer mu.Unlock(); return len(handles) }
	for deadline := time.Now().Add(10 * time.Second); spawned() < 5 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	require.GreaterOrEqual(t, spawned(), 5, "the root spawned too few workers in 10 s")
	require.NoError(t, p.Close())
	require.ErrorIs(t, <-runErr, ErrClosed)
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, handles)
	for _, h := range handles {
		_, done, err := h.Result()
		require.True(t, done)
		// Canceled while running, or spawned after Close began.
		require.True(t, errors.Is(err, ErrCanceled) || errors.Is(err, ErrClosed), "got %v", err)
	}
	require.Zero(t, p.Stats().TasksLive)
}

// TestEINTROnEveryWait injects EINTR into every other epoll wait: sleeps
// still end on time and nothing is lost.
func TestEINTROnEveryWait(t *testing.T) {
	requireNoLeaks(t)
	var n atomic.Int64
	fs := new(sys.Faults)
	fs.Set(func(c sys.Call) error {
		if c == sys.CallEpollWait && n.Add(1)%2 == 1 {
			return unix.EINTR
		}
		return nil
	})
	p, err := New(withFaults(fs))
	require.NoError(t, err)
	require.NoError(t, p.Run(func(tk *Task) error {
		for range 20 {
			start := time.Now()
			if err := tk.Sleep(time.Millisecond); err != nil {
				return err
			}
			require.GreaterOrEqual(t, time.Since(start), time.Millisecond)
		}
		return nil
	}))
	require.NoError(t, p.Close())
	require.GreaterOrEqual(t, n.Load(), int64(40), "every wait was interrupted once")
}

// TestResourceExhaustionGivesClearErrors injects ENOMEM/EMFILE where a pool
// or a registration is created: New and NewFdReady fail with an error that
// names the call, nothing leaks, and the pool works once the fault is gone.
func TestResourceExhaustionGivesClearErrors(t *testing.T) {
	requireNoLeaks(t)
	fs := new(sys.Faults)
	fs.Set(func(c sys.Call) error {
		if c == sys.CallEventfd {
			return unix.EMFILE
		}
		return nil
	})
	_, err := New(withFaults(fs))
	require.ErrorIs(t, err, unix.EMFILE)
	require.ErrorContains(t, err, "eventfd")

	fs.Set(nil)
	p, err := New(withFaults(fs))
	require.NoError(t, err)
	var fds [2]int
	require.NoError(t, unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC))
	defer unix.Close(fds[1])
	defer unix.Close(fds[0])
	fs.Set(func(c sys.Call) error {
		if c == sys.CallEpollCtl {
			return unix.ENOMEM
		}
		return nil
	})
	_, err = p.Driver().NewFdReady(fds[0])
	fs.Set(nil)
	require.ErrorIs(t, err, unix.ENOMEM)
	require.ErrorContains(t, err, "fd "+strconv.Itoa(fds[0]))
	require.Zero(t, p.Stats().FdsRegistered)

	// The pool still works, and the fd registers now.
	require.NoError(t, p.Run(func(tk *Task) error {
		fr, err := tk.Driver().NewFdReady(fds[0])
		if err != nil {
			return err
		}
		defer fr.Close()
		_, err = unix.Write(fds[1], []byte("x"))
		require.NoError(t, err)
		ev, err := fr.WaitReady(tk, SlotRead, PollIn)
		require.NotZero(t, ev&PollIn)
		return err
	}))
	require.NoError(t, p.Close())
}

// TestFdChurn opens, registers, uses and closes thousands of pipes whose fd
// numbers are reused, closing some registrations from other goroutines
// while the loop sleeps. No event reaches a closed registration (that
// would be a use of a released op; -race and the pinner would catch it),
// nothing panics, nothing leaks.
func TestFdChurn(t *testing.T) {
	requireNoLeaks(t)
	p, err := New()
	require.NoError(t, err)
	drv := p.Driver()
	rounds := 2000
	if testing.Short() {
		rounds = 200
	}
	require.NoError(t, p.Run(func(tk *Task) error {
		for i := range rounds {
			var fds [2]int
			if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
				return err
			}
			fr, err := drv.NewFdReady(fds[0])
			if err != nil {
				return err
			}
			// An event is in flight (the write) while the registration is
			// closed, half of the time from another goroutine.
			if _, err := unix.Write(fds[1], []byte{1}); err != nil {
				return err
			}
			if i%2 == 0 {
				if _, err := fr.WaitReady(tk, SlotRead, PollIn); err != nil {
					return err
				}
				require.NoError(t, fr.Close())
			} else {
				done := make(chan error, 1)
				go func() { done <- fr.Close() }()
				for len(done) == 0 {
					if err := tk.Sleep(time.Microsecond); err != nil {
						return err
					}
				}
				require.NoError(t, <-done)
			}
			unix.Close(fds[0])
			unix.Close(fds[1])
		}
		return nil
	}))
	require.Zero(t, p.Stats().FdsRegistered)
	require.NoError(t, p.Close())
}
