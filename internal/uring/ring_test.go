//go:build linux

package uring

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// newRing sets up a ring or skips the test when the kernel refuses
// io_uring (Refused: a reason outside the code); any other error fails it.
func newRing(t testing.TB, entries uint32) *Ring {
	t.Helper()
	r := newRingNoCleanup(t, entries)
	t.Cleanup(func() { require.NoError(t, r.Close()) })
	return r
}

// newRingNoCleanup is newRing for a test that closes the ring itself.
func newRingNoCleanup(t testing.TB, entries uint32) *Ring {
	t.Helper()
	r, err := New(entries, 0)
	if Refused(err) {
		t.Skipf("the kernel refuses io_uring: %v", err)
	}
	require.NoError(t, err, "io_uring setup failed, and not because the kernel refuses io_uring")
	return r
}

// Only the kernel's refusals are reasons to skip; the errors of the setup
// code itself (bad entries, a failed mmap) are not.
func TestRefusedOnlyOnTheKernelsRefusals(t *testing.T) {
	for _, errno := range []unix.Errno{unix.ENOSYS, unix.EPERM, unix.EACCES} {
		require.True(t, Refused(os.NewSyscallError("io_uring_setup", errno)), "%v", errno)
		require.True(t, Refused(fmt.Errorf("wrapped: %w", errno)), "%v wrapped", errno)
	}
	for _, err := range []error{nil, unix.EINVAL, unix.ENOMEM, unix.EFAULT, os.NewSyscallError("mmap sq ring", unix.ENOMEM), errors.New("uring: 0 entries")} {
		require.False(t, Refused(err), "%v", err)
	}
	_, err := New(0, 0)
	require.Error(t, err)
	require.False(t, Refused(err), "bad entries are the caller's error: %v", err)
}

func TestABILayout(t *testing.T) {
	var s SQE
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"opcode", unsafe.Offsetof(s.Opcode), 0}, {"flags", unsafe.Offsetof(s.Flags), 1},
		{"ioprio", unsafe.Offsetof(s.Ioprio), 2}, {"fd", unsafe.Offsetof(s.Fd), 4},
		{"off", unsafe.Offsetof(s.Off), 8}, {"addr", unsafe.Offsetof(s.Addr), 16},
		{"len", unsafe.Offsetof(s.Len), 24}, {"op_flags", unsafe.Offsetof(s.OpFlags), 28},
		{"user_data", unsafe.Offsetof(s.UserData), 32}, {"buf_index", unsafe.Offsetof(s.BufIndex), 40},
		{"personality", unsafe.Offsetof(s.Personality), 42}, {"file_index", unsafe.Offsetof(s.FileIndex), 44},
		{"addr3", unsafe.Offsetof(s.Addr3), 48},
	} {
		require.Equal(t, c.want, c.got, "io_uring_sqe.%s", c.name)
	}
	var c CQE
	require.EqualValues(t, 8, unsafe.Offsetof(c.Res))
	require.EqualValues(t, 12, unsafe.Offsetof(c.Flags))
	var p Params
	require.EqualValues(t, 40, unsafe.Offsetof(p.SQOff))
	require.EqualValues(t, 80, unsafe.Offsetof(p.CQOff))
	require.EqualValues(t, 64, unsafe.Sizeof(s))
	require.EqualValues(t, 16, unsafe.Sizeof(c))
}

func countFds(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(ents)
}

func TestNopRoundTripAndNoLeak(t *testing.T) {
	before := countFds(t)
	r := newRingNoCleanup(t, 8)
	for i := range 32 {
		sqe := r.NextSQE()
		sqe.Opcode, sqe.UserData = OpNop, uint64(1000+i)
		n, err := r.SubmitAndWait(1)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		var got []CQE
		r.DrainCQ(func(c CQE) { got = append(got, c) })
		require.Equal(t, []CQE{{UserData: uint64(1000 + i)}}, got)
	}
	require.NoError(t, r.Close())
	require.NoError(t, r.Close(), "Close twice")
	require.Equal(t, before, countFds(t))
}

func TestManyInFlightAndSQFull(t *testing.T) {
	r := newRing(t, 32)
	for i := range 32 {
		sqe := r.NextSQE()
		require.NotNil(t, sqe, "slot %d", i)
		sqe.Opcode, sqe.UserData = OpNop, uint64(i)
	}
	require.Nil(t, r.NextSQE(), "the SQ is full")
	require.EqualValues(t, 32, r.SQPending())
	n, err := r.SubmitAndWait(32)
	require.NoError(t, err)
	require.Equal(t, 32, n)
	seen := map[uint64]bool{}
	require.Equal(t, 32, r.DrainCQ(func(c CQE) { seen[c.UserData] = true }))
	require.Len(t, seen, 32)
	n, err = r.Submit()
	require.NoError(t, err)
	require.Zero(t, n, "nothing to submit: no system call")
}

func TestReadWriteFileAndBadFd(t *testing.T) {
	r := newRing(t, 8)
	f, err := os.CreateTemp(t.TempDir(), "ring")
	require.NoError(t, err)
	defer f.Close()
	data := []byte("written through io_uring")
	var pin runtime.Pinner
	pin.Pin(&data[0])
	defer pin.Unpin()
	sqe := r.NextSQE()
	sqe.Opcode, sqe.Fd, sqe.Addr, sqe.Len, sqe.UserData = OpWrite, int32(f.Fd()), uint64(uintptr(unsafe.Pointer(&data[0]))), uint32(len(data)), 1
	_, err = r.SubmitAndWait(1)
	require.NoError(t, err)
	r.DrainCQ(func(c CQE) { require.EqualValues(t, len(data), c.Res) })

	got := make([]byte, 64)
	pin.Pin(&got[0])
	sqe = r.NextSQE()
	sqe.Opcode, sqe.Fd, sqe.Addr, sqe.Len, sqe.UserData = OpRead, int32(f.Fd()), uint64(uintptr(unsafe.Pointer(&got[0]))), uint32(len(got)), 2
	_, err = r.SubmitAndWait(1)
	require.NoError(t, err)
	r.DrainCQ(func(c CQE) {
		require.EqualValues(t, len(data), c.Res)
		require.Equal(t, data, got[:c.Res])
	})

	sqe = r.NextSQE()
	sqe.Opcode, sqe.Fd, sqe.Addr, sqe.Len, sqe.UserData = OpRead, 987654, uint64(uintptr(unsafe.Pointer(&got[0]))), 1, 3
	_, err = r.SubmitAndWait(1)
	require.NoError(t, err)
	r.DrainCQ(func(c CQE) { require.EqualValues(t, -int32(unix.EBADF), c.Res) })
}

func TestProbeAndBadEntries(t *testing.T) {
	r := newRing(t, 4)
	p, err := r.Probe()
	require.NoError(t, err)
	require.True(t, p.Supported(OpNop))
	require.True(t, p.Supported(OpRead))
	require.False(t, p.Supported(250))
	for _, n := range []uint32{0, MaxEntries + 1} {
		_, err := New(n, 0)
		require.ErrorContains(t, err, "entries")
	}
}

// TestCQOverflowIsRecovered completes more operations than the CQ holds;
// the kernel keeps the rest (FEAT_NODROP) and Submit flushes them.
func TestCQOverflowIsRecovered(t *testing.T) {
	r := newRing(t, 4) // the CQ holds 8
	if r.Features()&FeatNoDrop == 0 {
		t.Skip("the kernel lacks IORING_FEAT_NODROP")
	}
	total := 0
	for range 5 {
		for range 4 {
			sqe := r.NextSQE()
			sqe.Opcode = OpNop
		}
		_, err := r.SubmitAndWait(0)
		require.NoError(t, err)
	}
	require.True(t, r.CQOverflowPending())
	for total < 20 {
		total += r.DrainCQ(func(CQE) {})
		_, err := r.Submit() // GETEVENTS flushes the overflow
		require.NoError(t, err)
	}
	require.Equal(t, 20, total)
}

// BenchmarkRawNop32InFlight keeps 32 NOPs in flight on a bare ring: the
// floor for the executor's io_uring path.
func BenchmarkRawNop32InFlight(b *testing.B) {
	b.ReportAllocs()
	r := newRing(b, 64)
	inflight, done := 0, 0
	for done < b.N {
		for inflight < 32 && done+inflight < b.N {
			sqe := r.NextSQE()
			sqe.Opcode = OpNop
			inflight++
		}
		if _, err := r.SubmitAndWait(1); err != nil {
			b.Fatal(err)
		}
		n := r.DrainCQ(func(CQE) {})
		inflight -= n
		done += n
	}
}

func BenchmarkRawNopSubmitWait(b *testing.B) {
	b.ReportAllocs()
	r := newRing(b, 8)
	for range b.N {
		sqe := r.NextSQE()
		sqe.Opcode = OpNop
		if _, err := r.SubmitAndWait(1); err != nil {
			b.Fatal(err)
		}
		r.DrainCQ(func(CQE) {})
	}
}
