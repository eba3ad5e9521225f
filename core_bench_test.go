//go:build linux

package iopool

import (
	"iter"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// runBench runs fn as the root task of a fresh pool.
func runBench(b *testing.B, fn func(t *Task) error, opts ...Option) *Pool {
	b.Helper()
	p, err := New(opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	if err := p.Run(fn); err != nil {
		b.Fatal(err)
	}
	return p
}

func BenchmarkSpawnJoin(b *testing.B) {
	b.ReportAllocs()
	runBench(b, func(t *Task) error {
		drv := t.Driver()
		empty := func(*Task) (int, error) { return 0, nil }
		b.ResetTimer()
		for range b.N {
			if _, err := Spawn(drv, "empty", empty).Join(t); err != nil {
				return err
			}
		}
		return nil
	})
}

// pendingOnce is pending on every other poll and wakes its poller at once:
// one await that suspends and is resumed by the same pool.
type pendingOnce struct{ armed bool }

func (f *pendingOnce) Poll(cx *PollContext) (struct{}, error) {
	if f.armed {
		f.armed = false
		return struct{}{}, nil
	}
	f.armed = true
	cx.Waker().Wake()
	return struct{}{}, ErrPending
}

func BenchmarkAwaitPendingOnce(b *testing.B) {
	b.ReportAllocs()
	runBench(b, func(t *Task) error {
		f := &pendingOnce{}
		b.ResetTimer()
		for range b.N {
			if _, err := Await[struct{}](t, f); err != nil {
				return err
			}
		}
		return nil
	})
}

// BenchmarkIterPullRoundTrip is the floor of BenchmarkAwaitPendingOnce: a
// bare iter.Pull coroutine resumed and suspended once per iteration, with
// no pool around it. An await that suspends costs this switch plus the
// loop's bookkeeping.
func BenchmarkIterPullRoundTrip(b *testing.B) {
	b.ReportAllocs()
	next, stop := iter.Pull(func(yield func(struct{}) bool) {
		for yield(struct{}{}) {
		}
	})
	defer stop()
	b.ResetTimer()
	for range b.N {
		next()
	}
}

// BenchmarkRemoteRoundTrip: a plain goroutine sends to a task through a
// Chan, the task answers through another; compare with
// BenchmarkRawEventfdEpollPingPong.
func BenchmarkRemoteRoundTrip(b *testing.B) {
	b.ReportAllocs()
	for _, locked := range []bool{false, true} {
		name := "unlocked"
		var opts []Option
		if locked {
			name = "locked"
			opts = append(opts, WithLockOSThread())
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			ping, pong := NewChan[int](), NewChan[int]()
			go func() {
				for i := range b.N {
					_ = ping.Send(i)
					if _, err := pong.RecvWait(); err != nil {
						panic(err)
					}
				}
				ping.Close()
			}()
			runBench(b, func(t *Task) error {
				for {
					v, err := ping.Recv(t)
					if err == ErrChannelClosed {
						return nil
					}
					if err != nil {
						return err
					}
					_ = pong.Send(v)
				}
			}, opts...)
		})
	}
}

// BenchmarkRawEventfdEpollPingPong is the floor for a remote round trip: a
// goroutine writes an eventfd and blocks reading another; a loop goroutine
// blocks in epoll_wait on the first, reads it, and writes the second.
func BenchmarkRawEventfdEpollPingPong(b *testing.B) {
	b.ReportAllocs()
	ping, _ := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	pong, _ := unix.Eventfd(0, unix.EFD_CLOEXEC) // blocking reads
	epfd, _ := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	defer unix.Close(ping)
	defer unix.Close(pong)
	defer unix.Close(epfd)
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, ping, &ev); err != nil {
		b.Fatal(err)
	}
	one := uint64(1)
	buf := (*[8]byte)(unsafe.Pointer(&one))[:]
	done := make(chan struct{})
	go func() {
		defer close(done)
		events := make([]unix.EpollEvent, 8)
		var rb [8]byte
		for range b.N {
			for {
				n, err := unix.EpollWait(epfd, events, -1)
				if err == nil && n > 0 {
					break
				}
			}
			_, _ = unix.Read(ping, rb[:])
			_, _ = unix.Write(pong, buf)
		}
	}()
	var rb [8]byte
	b.ResetTimer()
	for range b.N {
		_, _ = unix.Write(ping, buf)
		_, _ = unix.Read(pong, rb[:])
	}
	<-done
}

// counterWaker counts wakes; it is the waker of the timers below.
type counterWaker struct{ n atomic.Int64 }

func (w *counterWaker) Wake() { w.n.Add(1) }

// BenchmarkTimersFired arms b.N timers with deadlines spread over 10 ms and
// runs the loop until all have fired; compare with BenchmarkTimeAfterFunc.
// CPU time per timer is reported (process CPU, so both sides count the same).
func BenchmarkTimersFired(b *testing.B) {
	b.ReportAllocs()
	p, err := New()
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	timers := make([]Timer, b.N)
	w := &counterWaker{}
	cx := NewPollContext(w)
	cpu0 := processCPU()
	b.ResetTimer()
	// Deadlines start after the arming is expected to end, so that nearly
	// every timer goes through the heap; one already due is ready at once
	// and counts as fired.
	base := time.Now().Add(time.Millisecond + time.Duration(b.N)*500*time.Nanosecond)
	for i := range timers {
		timers[i] = Timer{p: p, e: timerEntry{index: -1}}
		if _, ready := timers[i].PollTimer(cx, base.Add(time.Duration(i%10_000)*time.Microsecond)); ready {
			w.Wake()
		}
	}
	err = p.Run(func(t *Task) error {
		for w.n.Load() < int64(b.N) {
			if err := t.Sleep(time.Millisecond); err != nil {
				return err
			}
		}
		return nil
	})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/timer")
}

func BenchmarkTimeAfterFunc(b *testing.B) {
	b.ReportAllocs()
	var wg sync.WaitGroup
	wg.Add(b.N)
	cpu0 := processCPU()
	b.ResetTimer()
	base := time.Millisecond + time.Duration(b.N)*500*time.Nanosecond
	for i := range b.N {
		time.AfterFunc(base+time.Duration(i%10_000)*time.Microsecond, wg.Done)
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/timer")
}

// BenchmarkTimerRearm re-arms one existing timer: no allocation.
func BenchmarkTimerRearm(b *testing.B) {
	b.ReportAllocs()
	p, err := New()
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	tm := p.Driver().NewTimer()
	cx := NewPollContext(&counterWaker{})
	base := time.Now().Add(time.Hour)
	b.ResetTimer()
	for i := range b.N {
		tm.PollTimer(cx, base.Add(time.Duration(i&1023)))
	}
}

// BenchmarkSleepOvershoot reports how late t.Sleep(100µs) and time.Sleep
// wake up (median), as custom metrics.
func BenchmarkSleepOvershoot(b *testing.B) {
	const d = 100 * time.Microsecond
	pool := func(opts ...Option) func(b *testing.B) {
		return func(b *testing.B) {
			late := make([]time.Duration, 0, b.N)
			runBench(b, func(t *Task) error {
				for range b.N {
					start := time.Now()
					if err := t.Sleep(d); err != nil {
						return err
					}
					late = append(late, time.Since(start)-d)
				}
				return nil
			}, opts...)
			b.ReportMetric(float64(median(late).Nanoseconds()), "overshoot-ns")
		}
	}
	b.Run("iopool", pool())
	b.Run("iopool-locked", pool(WithLockOSThread()))
	b.Run("time.Sleep", func(b *testing.B) {
		late := make([]time.Duration, 0, b.N)
		for range b.N {
			start := time.Now()
			time.Sleep(d)
			late = append(late, time.Since(start)-d)
		}
		b.ReportMetric(float64(median(late).Nanoseconds()), "overshoot-ns")
	})
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// processCPU returns the process's user+system CPU time in nanoseconds.
func processCPU() int64 {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkSpawnDetached spawns tasks nobody joins (fire and forget), 64 at
// a time, letting each batch run to completion: the spawn, the run, and the
// task table's entry for a finished task whose result nobody took.
func BenchmarkSpawnDetached(b *testing.B) {
	b.ReportAllocs()
	runBench(b, func(t *Task) error {
		drv := t.Driver()
		empty := func(*Task) (int, error) { return 0, nil }
		var yield pendingOnce
		b.ResetTimer()
		for i := range b.N {
			Spawn(drv, "detached", empty)
			if i%64 == 63 {
				if _, err := Await[struct{}](t, &yield); err != nil {
					return err
				}
			}
		}
		return nil
	})
}
