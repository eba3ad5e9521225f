//go:build linux

package iopool

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/sys"
	"github.com/iopool/iopool/internal/uring"
)

// requireUring returns the pool's ring, or skips the test when the kernel
// refuses io_uring (uring.Refused: a reason outside the code). Any other
// error from the ring's setup fails the test. Inside a task the skip ends
// only the task: call it in runPool's task (which skips the test then), or
// call skipIfKernelRefusesUring first, from the test's goroutine.
func requireUring(t testing.TB, drv *Driver) *Uring {
	t.Helper()
	u, err := drv.Uring()
	if errors.Is(err, ErrUringUnavailable) && uring.Refused(err) {
		t.Skipf("the kernel refuses io_uring: %v", err)
	}
	require.NoError(t, err, "io_uring setup failed, and not because the kernel refuses io_uring")
	return u
}

// skipIfKernelRefusesUring skips the test, from the test's goroutine, when
// the kernel refuses io_uring: for a test that runs its pool itself (not
// through runPool), or that would otherwise wait for a ring that never
// comes. Any other setup error is no reason to skip; it is left for
// requireUring to report as a failure.
func skipIfKernelRefusesUring(t *testing.T) {
	t.Helper()
	r, err := uring.New(1, 0)
	if uring.Refused(err) {
		t.Skipf("the kernel refuses io_uring: %v", err)
	}
	if err == nil {
		require.NoError(t, r.Close())
	}
}

// Seed scenario: many operations in flight from many tasks reach the
// kernel in one io_uring_enter per loop cycle.
func TestUringManyInFlightOneEnterPerCycle(t *testing.T) {
	p := runPool(t, func(tk *Task) error {
		u := requireUring(t, tk.Driver())
		var hs []*Handle[int]
		for range 64 {
			hs = append(hs, Spawn(tk.Driver(), "nop", func(t *Task) (int, error) { return 0, u.Nop(t) }))
		}
		for _, h := range hs {
			if _, err := h.Join(tk); err != nil {
				return err
			}
		}
		return nil
	})
	st := p.Stats()
	require.EqualValues(t, 64, st.UringSubmitted)
	require.EqualValues(t, 64, st.UringCompleted)
	require.LessOrEqual(t, st.UringEnters, st.Cycles, "at most one io_uring_enter per cycle")
	require.LessOrEqual(t, st.UringEnters, uint64(4), "64 SQEs queued in one cycle go in one enter")
	t.Logf("stats %+v", st)
}

// Seed scenario: canceling a task with a read in flight returns
// ErrCanceled at once; the kernel op is canceled and its buffer stays
// pinned until the completion, after which the slot is free.
func TestUringCancelKeepsBufferUntilCompletion(t *testing.T) {
	runPool(t, func(tk *Task) error {
		var fds [2]int
		require.NoError(t, unix.Pipe2(fds[:], unix.O_CLOEXEC))
		defer unix.Close(fds[0])
		defer unix.Close(fds[1])
		u := requireUring(t, tk.Driver())
		reader := Spawn(tk.Driver(), "reader", func(t *Task) (int, error) {
			return u.Read(t, fds[0], make([]byte, 128), 0)
		})
		require.NoError(t, tk.Sleep(2*time.Millisecond))
		require.Equal(t, 1, u.inflight)
		start := time.Now()
		reader.Cancel()
		_, err := reader.Join(tk)
		require.ErrorIs(t, err, ErrCanceled)
		require.Less(t, time.Since(start), time.Second)
		// The cancel completes the read with ECANCELED; the op is released.
		requireCanceledOpsReleased(t, tk, u)
		return nil
	})
}

// requireCanceledOpsReleased waits (up to a second) for the completions of
// canceled operations, then checks every op is back on the free list,
// unpinned.
func requireCanceledOpsReleased(t *testing.T, tk *Task, u *Uring) {
	t.Helper()
	for i := 0; u.inflight > 0; i++ {
		require.Less(t, i, 1000, "a canceled operation never completed")
		require.NoError(t, tk.Sleep(time.Millisecond))
	}
	requireAllOpsFree(t, u)
}

// requireAllOpsFree checks that every slot of the op table is free, and so
// unpinned. Call it on the loop goroutine (inside a task) or after Close.
func requireAllOpsFree(t *testing.T, u *Uring) {
	t.Helper()
	require.Zero(t, u.inflight, "ops in flight")
	require.Len(t, u.free, len(u.ops), "every op is back on the free list, unpinned")
	for _, op := range u.ops {
		require.Equal(t, opFree, op.state, "op %d", op.index)
	}
}

func TestUringUnavailableKeepsPoolWorking(t *testing.T) {
	parallel(t)
	requireNoLeaks(t)
	p, err := New(withFaults(failUringSetup(unix.EPERM)))
	require.NoError(t, err)
	_, err = p.Driver().Uring()
	require.ErrorIs(t, err, ErrUringUnavailable)
	require.ErrorIs(t, err, unix.EPERM)
	require.ErrorContains(t, err, "io_uring_setup")
	_, err2 := p.Driver().Uring()
	require.Equal(t, err, err2, "the refusal is remembered")
	require.NoError(t, p.Run(func(tk *Task) error { return tk.Sleep(time.Millisecond) }))
	require.NoError(t, p.Close())

	// The same through the syscall seam.
	fs := new(sys.Faults)
	fs.Set(func(c sys.Call) error {
		if c == sys.CallUringSetup {
			return unix.ENOMEM
		}
		return nil
	})
	q, err := New(withFaults(fs))
	require.NoError(t, err)
	_, err = q.Driver().Uring()
	require.ErrorIs(t, err, ErrUringUnavailable)
	require.ErrorIs(t, err, unix.ENOMEM)
	require.NoError(t, q.Close())
}

// benchNops runs nops (which completes at least b.N NOPs of the b it is
// given and returns how many) on a pool with and without a locked OS thread, and reports the time
// per NOP and the SQEs each io_uring_enter carried.
func benchNops(b *testing.B, nops func(b *testing.B, tk *Task, u *Uring) (int, error)) {
	for _, mode := range []struct {
		name string
		opts []Option
	}{{"unlocked", nil}, {"locked", []Option{WithLockOSThread()}}} {
		b.Run(mode.name, func(b *testing.B) {
			b.ReportAllocs()
			runBench(b, func(tk *Task) error {
				u := requireUring(b, tk.Driver())
				b.ResetTimer()
				n, err := nops(b, tk, u)
				if err != nil {
					return err
				}
				b.StopTimer()
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/nop")
				st := tk.Driver().Pool().Stats()
				b.ReportMetric(float64(st.UringSubmitted)/float64(max(st.UringEnters, 1)), "sqes/enter")
				return nil
			}, mode.opts...)
		})
	}
}

// BenchmarkUringNop32InFlight: 32 tasks each submit NOPs one after the
// other, so 32 are in flight; compare with internal/uring's
// BenchmarkRawNop32InFlight (the ring without the executor).
func BenchmarkUringNop32InFlight(b *testing.B) {
	benchNops(b, func(b *testing.B, tk *Task, u *Uring) (int, error) {
		per := b.N/32 + 1
		var hs []*Handle[int]
		for range 32 {
			hs = append(hs, Spawn(tk.Driver(), "nop", func(t *Task) (int, error) {
				for range per {
					if err := u.Nop(t); err != nil {
						return 0, err
					}
				}
				return 0, nil
			}))
		}
		for _, h := range hs {
			if _, err := h.Join(tk); err != nil {
				return 0, err
			}
		}
		return 32 * per, nil
	})
}

// BenchmarkUringNop32Batch: one task keeps 32 NOPs in flight as a Batch,
// waiting for them with one suspension; compare with BenchmarkRawNop32InFlight
// and with BenchmarkUringNop32InFlight (32 tasks, one suspension per NOP).
func BenchmarkUringNop32Batch(b *testing.B) {
	benchNops(b, func(b *testing.B, tk *Task, u *Uring) (int, error) {
		batch := u.NewBatch()
		done := 0
		for ; done < b.N; done += 32 {
			for range 32 {
				if err := batch.Nop(tk); err != nil {
					return 0, err
				}
			}
			if err := batch.Await(tk); err != nil {
				return 0, err
			}
		}
		return done, nil
	})
}

func BenchmarkUringNopSingle(b *testing.B) {
	b.ReportAllocs()
	runBench(b, func(tk *Task) error {
		u := requireUring(b, tk.Driver())
		b.ResetTimer()
		for range b.N {
			if err := u.Nop(tk); err != nil {
				return err
			}
		}
		return nil
	})
}

const randomReadFileSize = 256 << 20

// randomReadFile writes a 256 MiB file of data (not a sparse one: the reads
// copy real page-cache pages) in the benchmark's temporary directory.
func randomReadFile(b *testing.B) *os.File {
	b.Helper()
	f, err := os.CreateTemp(b.TempDir(), "read4k")
	require.NoError(b, err)
	b.Cleanup(func() { f.Close() })
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i*7 + i>>12)
	}
	for range randomReadFileSize / len(chunk) {
		_, err := f.Write(chunk)
		require.NoError(b, err)
	}
	return f
}

// BenchmarkUringRead4K: 32 tasks read random 4 KiB blocks through u.Read;
// compare with BenchmarkOSFileReadAt4K (32 goroutines, ReadAt).
func BenchmarkUringRead4K(b *testing.B) {
	b.ReportAllocs()
	f := randomReadFile(b)
	runBench(b, func(tk *Task) error {
		u := requireUring(b, tk.Driver())
		per := b.N/32 + 1
		var hs []*Handle[int]
		b.ResetTimer()
		cpu0 := processCPU()
		for i := range 32 {
			hs = append(hs, Spawn(tk.Driver(), "reader", func(t *Task) (int, error) {
				rng := rand.New(rand.NewPCG(uint64(i), 1))
				buf := make([]byte, 4096)
				for range per {
					off := int64(rng.IntN(randomReadFileSize/4096)) * 4096
					if _, err := u.Read(t, int(f.Fd()), buf, off); err != nil {
						return 0, err
					}
				}
				return 0, nil
			}))
		}
		for _, h := range hs {
			if _, err := h.Join(tk); err != nil {
				return err
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(processCPU()-cpu0)/float64(32*per), "cpu-ns/read")
		return nil
	})
}

// BenchmarkUringRead4KBatch: the same reads, 32 in flight as one Batch of
// one task.
func BenchmarkUringRead4KBatch(b *testing.B) {
	b.ReportAllocs()
	f := randomReadFile(b)
	runBench(b, func(tk *Task) error {
		u := requireUring(b, tk.Driver())
		batch := u.NewBatch()
		rng := rand.New(rand.NewPCG(1, 1))
		bufs := make([][]byte, 32)
		for i := range bufs {
			bufs[i] = make([]byte, 4096)
		}
		b.ResetTimer()
		cpu0 := processCPU()
		for done := 0; done < b.N; done += len(bufs) {
			for _, buf := range bufs {
				off := int64(rng.IntN(randomReadFileSize/4096)) * 4096
				if err := batch.Read(tk, int(f.Fd()), buf, off); err != nil {
					return err
				}
			}
			if err := batch.Await(tk); err != nil {
				return err
			}
			for i := range bufs {
				if n, err := batch.Result(i); err != nil || n != 4096 {
					return fmt.Errorf("read %d: %d bytes, %v", i, n, err)
				}
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(processCPU()-cpu0)/float64((b.N+31)/32*32), "cpu-ns/read")
		return nil
	})
}

func BenchmarkOSFileReadAt4K(b *testing.B) {
	b.ReportAllocs()
	f := randomReadFile(b)
	per := b.N/32 + 1
	var wg sync.WaitGroup
	b.ResetTimer()
	cpu0 := processCPU()
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			buf := make([]byte, 4096)
			for range per {
				off := int64(rng.IntN(randomReadFileSize/4096)) * 4096
				if _, err := f.ReadAt(buf, off); err != nil {
					panic(err)
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(processCPU()-cpu0)/float64(32*per), "cpu-ns/read")
}

// With WithLockOSThread the ring is single-issuer and cooperative (where the
// kernel has the flags), created from a plain goroutine before Run and
// enabled by the loop thread. Completions that arrive while the loop thread
// sleeps in epoll_wait still wake it: a pipe read finished by a write from
// another goroutine, a kernel timeout, and remote submissions.
func TestUringLockedSingleIssuer(t *testing.T) {
	skipIfKernelRefusesUring(t)
	requireNoLeaks(t)
	p, err := New(WithLockOSThread())
	require.NoError(t, err)
	u := requireUring(t, p.Driver()) // from this goroutine, not the loop's
	if u.ring.Flags()&uring.SetupSingleIssuer == 0 {
		t.Logf("the kernel has no IORING_SETUP_SINGLE_ISSUER; flags %#x", u.ring.Flags())
	}
	require.NoError(t, p.Run(func(tk *Task) error {
		var fds [2]int
		require.NoError(t, unix.Pipe2(fds[:], unix.O_CLOEXEC))
		defer unix.Close(fds[0])
		defer unix.Close(fds[1])
		for range 20 {
			go func() {
				time.Sleep(2 * time.Millisecond)
				unix.Write(fds[1], []byte("x"))
			}()
			buf := make([]byte, 4)
			n, err := u.Read(tk, fds[0], buf, -1)
			require.NoError(t, err)
			require.Equal(t, 1, n)
		}
		require.NoError(t, u.Timeout(tk, 3*time.Millisecond))
		done := NewOneshot[error]()
		go func() {
			c, err := u.Start(func(s *SQE) { s.Opcode = OpNop })
			if err == nil {
				_, err = c.Wait()
			}
			_ = done.Send(err)
		}()
		err, rerr := done.Recv(tk)
		require.NoError(t, rerr)
		return err
	}))
	require.NoError(t, p.Close())
}
