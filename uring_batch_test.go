//go:build linux

package iopool

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/sys"
)

// A batch of writes, then a batch of reads of the same file, a no-op and a
// failing operation: every result is delivered to its own entry.
func TestUringBatchReadWrite(t *testing.T) {
	runPool(t, func(tk *Task) error {
		u := requireUring(t, tk.Driver())
		f, err := os.Create(filepath.Join(t.TempDir(), "batch"))
		require.NoError(t, err)
		defer f.Close()
		fd := int(f.Fd())

		const blocks, size = 16, 4096
		b := u.NewBatch()
		want := make([][]byte, blocks)
		for i := range want {
			want[i] = bytes.Repeat([]byte{byte('a' + i)}, size)
			require.NoError(t, b.Write(tk, fd, want[i], int64(i*size)))
		}
		require.Equal(t, blocks, b.Len())
		enters := tk.Driver().Pool().Stats().UringEnters
		require.NoError(t, b.Await(tk))
		require.Equal(t, enters+1, tk.Driver().Pool().Stats().UringEnters, "one io_uring_enter for the whole batch")
		for i := range blocks {
			n, err := b.Result(i)
			require.NoError(t, err)
			require.EqualValues(t, size, n)
		}

		got := make([][]byte, blocks)
		for i := range got {
			got[i] = make([]byte, size)
			require.NoError(t, b.Read(tk, fd, got[i], int64(i*size)))
		}
		require.NoError(t, b.Nop(tk))
		require.NoError(t, b.Read(tk, -1, make([]byte, 8), 0)) // EBADF in its CQE
		require.NoError(t, b.Submit(tk, func(sqe *SQE) { sqe.Opcode = OpNop }))
		require.NoError(t, b.Await(tk))
		require.Equal(t, blocks+3, b.Len())
		for i := range blocks {
			n, err := b.Result(i)
			require.NoError(t, err)
			require.EqualValues(t, size, n)
			require.Equal(t, want[i], got[i], "block %d", i)
		}
		n, err := b.Result(blocks)
		require.NoError(t, err)
		require.Zero(t, n)
		_, err = b.Result(blocks + 1)
		require.ErrorIs(t, err, unix.EBADF)
		require.ErrorContains(t, err, "io_uring read (batch entry 17)")
		_, err = b.Result(blocks + 2)
		require.NoError(t, err)
		require.Len(t, u.free, len(u.ops), "every op is back on the free list, unpinned")
		return nil
	})
}

// Bad input is refused before anything reaches the kernel and leaves the
// rest of the batch intact; misuse of Result panics with a clear message.
func TestUringBatchBadInputAndMisuse(t *testing.T) {
	runPool(t, func(tk *Task) error {
		u := requireUring(t, tk.Driver())
		b := u.NewBatch()
		require.NoError(t, b.Await(tk), "an empty batch is done at once")
		require.PanicsWithValue(t, "iopool: Batch.Result called before Await", func() { _, _ = b.Result(0) })
		require.NoError(t, b.Nop(tk))
		require.ErrorContains(t, b.Read(tk, 0, nil, 0), "io_uring read: nil buffer")
		require.ErrorContains(t, b.Write(tk, 0, make([]byte, 1), -2), "io_uring write: negative offset -2")
		require.Equal(t, 1, b.Len())
		require.NoError(t, b.Await(tk))
		require.NoError(t, b.Await(tk), "a second Wait keeps the results")
		require.Equal(t, 1, b.Len())
		require.PanicsWithValue(t, "iopool: Batch.Result(1) out of range: the batch held 1 operations", func() { _, _ = b.Result(1) })
		require.Panics(t, func() { _ = u.NewBatch().Nop(nil) }, "a nil task")
		return nil
	})
}

// A batch much larger than the ring: the submission queue is submitted
// whenever it fills, and the completions that outrun the completion queue
// are recovered from the kernel's overflow list.
func TestUringBatchLargerThanRing(t *testing.T) {
	parallel(t)
	runPool(t, func(tk *Task) error {
		u := requireUring(t, tk.Driver())
		b := u.NewBatch()
		for round := range 3 {
			for range 1000 {
				require.NoError(t, b.Nop(tk))
			}
			require.NoError(t, b.Await(tk), "round %d", round)
			require.Equal(t, 1000, b.Len())
			for i := range 1000 {
				_, err := b.Result(i)
				require.NoError(t, err)
			}
		}
		require.Zero(t, u.inflight)
		return nil
	}, WithUringEntries(8))
}

// Canceling a task waiting for a batch returns ErrCanceled promptly, cancels
// the operations still in the kernel and keeps their buffers until their
// completions arrive.
func TestUringBatchCancel(t *testing.T) {
	runPool(t, func(tk *Task) error {
		var fds [2]int
		require.NoError(t, unix.Pipe2(fds[:], unix.O_CLOEXEC))
		defer unix.Close(fds[0])
		defer unix.Close(fds[1])
		u := requireUring(t, tk.Driver())
		waiter := Spawn(tk.Driver(), "batch", func(t *Task) (int, error) {
			b := u.NewBatch()
			if err := b.Nop(t); err != nil {
				return 0, err
			}
			for range 3 {
				if err := b.Read(t, fds[0], make([]byte, 64), 0); err != nil {
					return 0, err
				}
			}
			err := b.Await(t)
			return b.Len(), err
		})
		require.NoError(t, tk.Sleep(2*time.Millisecond))
		require.Equal(t, 3, u.inflight, "the reads wait for data, the no-op is done")
		start := time.Now()
		waiter.Cancel()
		n, err := waiter.Join(tk)
		require.ErrorIs(t, err, ErrCanceled)
		require.Zero(t, n, "a canceled batch is empty")
		require.Less(t, time.Since(start), time.Second)
		requireCanceledOpsReleased(t, tk, u)
		return nil
	})
}

// Operations nobody waits for (a Batch never waited, a Completion dropped)
// are unpinned when the pool closes: a runtime.Pinner that becomes garbage
// while still pinning panics the whole process from the finalizer.
func TestUnconsumedOpsAreUnpinnedAtClose(t *testing.T) {
	skipIfKernelRefusesUring(t)
	requireNoLeaks(t)
	p, err := New()
	require.NoError(t, err)
	require.NoError(t, p.Run(func(tk *Task) error {
		u := requireUring(t, tk.Driver())
		b := u.NewBatch()
		for range 4 {
			require.NoError(t, b.Read(tk, -1, make([]byte, 64), 0)) // pins the buffer
		}
		_, err := u.Start(func(sqe *SQE) { sqe.Opcode = OpNop }, make([]byte, 64))
		require.NoError(t, err)
		return tk.Sleep(5 * time.Millisecond) // the CQEs arrive; nobody consumes them
	}))
	require.NoError(t, p.Close())
	p = nil
	for range 3 {
		runtime.GC() // before the fix, the Pinners' finalizers panicked here
		time.Sleep(10 * time.Millisecond)
	}
}

// The kernel refusing submissions while its completion queue holds entries
// (EBUSY), with a batch that overfills the submission queue: the loop drains
// the completions and retries, and every operation completes.
func TestUringSubmitRefusedIsRetried(t *testing.T) {
	parallel(t)
	fs := new(sys.Faults)
	runPool(t, func(tk *Task) error {
		u := requireUring(t, tk.Driver())
		var refused atomic.Int32
		fs.Set(func(c sys.Call) error {
			// Refuses only while completions wait to be drained; the cap
			// ends a retry loop that never drains, so the test fails
			// instead of hanging.
			if c == sys.CallUringEnter && u.ring.CQReady() && refused.Load() < 100_000 {
				refused.Add(1)
				return unix.EBUSY
			}
			return nil
		})
		defer func() { fs.Set(nil) }()
		b := u.NewBatch()
		for range 100 {
			require.NoError(t, b.Nop(tk))
		}
		require.NoError(t, b.Await(tk))
		require.Equal(t, 100, b.Len())
		require.Positive(t, refused.Load(), "submissions were refused")
		require.Less(t, refused.Load(), int32(100), "each refusal is followed by a drain, then accepted")
		require.Zero(t, u.inflight)
		return nil
	}, WithUringEntries(8), withFaults(fs))
}
