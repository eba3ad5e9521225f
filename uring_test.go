package iopool

import (
	"errors"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/sys"
)

// requireUring returns the pool's ring, or skips the test when the kernel
// refuses io_uring (a reason outside the code).
func requireUring(t testing.TB, drv *Driver) *Uring {
	t.Helper()
	u, err := drv.Uring()
	if errors.Is(err, ErrUringUnavailable) && (errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOMEM)) {
		t.Skipf("the kernel refuses io_uring: %v", err)
	}
	require.NoError(t, err)
	return u
}

// Seed scenario: a write and a read of a file through the ring.
func TestUringReadWrite(t *testing.T) {
	runPool(t, func(tk *Task) error {
		u := requireUring(t, tk.Driver())
		f, err := os.CreateTemp(t.TempDir(), "uring")
		require.NoError(t, err)
		defer f.Close()
		fd := int(f.Fd())
		msg := []byte("through the ring")
		n, err := u.Write(tk, fd, msg, 0)
		require.NoError(t, err)
		require.Equal(t, len(msg), n)
		require.NoError(t, u.Fsync(tk, fd))
		got := make([]byte, 64)
		n, err = u.Read(tk, fd, got, 0)
		require.NoError(t, err)
		require.Equal(t, msg, got[:n])

		a, b := make([]byte, 7), make([]byte, 9)
		n, err = u.Readv(tk, fd, [][]byte{a, b}, 0)
		require.NoError(t, err)
		require.Equal(t, len(msg), n)
		require.Equal(t, msg, append(a, b...)[:n])

		nfd, err := u.Openat(tk, unix.AT_FDCWD, f.Name(), unix.O_RDONLY, 0)
		require.NoError(t, err)
		require.NoError(t, u.Close(tk, nfd))
		require.NoError(t, u.Nop(tk))
		start := time.Now()
		require.NoError(t, u.Timeout(tk, 2*time.Millisecond))
		require.GreaterOrEqual(t, time.Since(start), 2*time.Millisecond)
		require.True(t, u.Probe(OpRead))
		require.False(t, u.Probe(250))
		return nil
	})
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
		u.mu.Lock()
		require.Equal(t, 1, u.inflight)
		u.mu.Unlock()
		start := time.Now()
		reader.Cancel()
		_, err := reader.Join(tk)
		require.ErrorIs(t, err, ErrCanceled)
		require.Less(t, time.Since(start), time.Second)
		// The cancel completes the read with ECANCELED; the op is released.
		for i := 0; ; i++ {
			u.mu.Lock()
			left := u.inflight
			u.mu.Unlock()
			if left == 0 {
				break
			}
			require.Less(t, i, 1000, "the canceled read never completed")
			require.NoError(t, tk.Sleep(time.Millisecond))
		}
		u.mu.Lock()
		require.Len(t, u.free, len(u.ops), "every op is back on the free list, unpinned")
		u.mu.Unlock()
		return nil
	})
}

func TestUringUnavailableKeepsPoolWorking(t *testing.T) {
	requireNoLeaks(t)
	p, err := New(withUringRefused(unix.EPERM))
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
	sys.SetFaults(func(c sys.Call) error {
		if c == sys.CallUringSetup {
			return unix.ENOMEM
		}
		return nil
	})
	q, err := New()
	require.NoError(t, err)
	_, err = q.Driver().Uring()
	sys.SetFaults(nil)
	require.ErrorIs(t, err, ErrUringUnavailable)
	require.ErrorIs(t, err, unix.ENOMEM)
	require.NoError(t, q.Close())
}

func TestUringBadInput(t *testing.T) {
	var u *Uring
	runPool(t, func(tk *Task) error {
		u = requireUring(t, tk.Driver())
		_, err := u.Read(tk, 987654, make([]byte, 8), 0)
		require.ErrorIs(t, err, unix.EBADF)
		require.ErrorContains(t, err, "io_uring read")
		_, err = u.Read(tk, 0, nil, 0)
		require.ErrorContains(t, err, "nil buffer")
		_, err = u.Write(tk, 0, []byte("x"), -2)
		require.ErrorContains(t, err, "negative offset -2")
		_, err = u.Readv(tk, 0, nil, 0)
		require.ErrorContains(t, err, "no buffers")
		return nil
	})
	_, err := New(WithUringEntries(0))
	require.ErrorContains(t, err, "WithUringEntries(0)")
	_, err = New(WithUringEntries(1 << 20))
	require.Error(t, err)
	_, err = u.Start(func(s *SQE) { s.Opcode = OpNop })
	require.ErrorIs(t, err, ErrClosed, "submitting after Close")
}

// An operation started from a plain goroutine is queued for the loop and
// completed through the poll layer.
func TestUringStartFromPlainGoroutine(t *testing.T) {
	runPool(t, func(tk *Task) error {
		u := requireUring(t, tk.Driver())
		f, err := os.CreateTemp(t.TempDir(), "start")
		require.NoError(t, err)
		defer f.Close()
		buf := []byte("remote")
		done := NewOneshot[int32]()
		go func() {
			c, err := u.Start(func(s *SQE) {
				s.Opcode, s.Fd, s.Addr, s.Len = OpWrite, int32(f.Fd()), bufAddr(buf), uint32(len(buf))
			}, buf)
			require.NoError(t, err)
			n, err := c.Wait()
			require.NoError(t, err)
			_ = done.Send(n)
		}()
		n, err := done.Recv(tk)
		require.NoError(t, err)
		require.EqualValues(t, len(buf), n)
		return nil
	})
}

func BenchmarkUringNop32InFlight(b *testing.B) {
	b.ReportAllocs()
	runBench(b, func(tk *Task) error {
		u := requireUring(b, tk.Driver())
		per := b.N/32 + 1
		var hs []*Handle[int]
		b.ResetTimer()
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
				return err
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(32*per), "ns/nop")
		return nil
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

// readFile4K makes a file of size bytes for the random-read benchmarks.
var readFile4K struct {
	once sync.Once
	path string
	err  error
}

const randomReadFileSize = 64 << 20

func randomReadFile(b *testing.B) *os.File {
	readFile4K.once.Do(func() {
		f, err := os.CreateTemp("", "iopool-read4k")
		if err != nil {
			readFile4K.err = err
			return
		}
		defer f.Close()
		readFile4K.path = f.Name()
		readFile4K.err = f.Truncate(randomReadFileSize)
	})
	require.NoError(b, readFile4K.err)
	f, err := os.Open(readFile4K.path)
	require.NoError(b, err)
	b.Cleanup(func() { f.Close() })
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
		return nil
	})
}

func BenchmarkOSFileReadAt4K(b *testing.B) {
	b.ReportAllocs()
	f := randomReadFile(b)
	per := b.N/32 + 1
	var wg sync.WaitGroup
	b.ResetTimer()
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
}
