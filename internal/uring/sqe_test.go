//go:build linux

package uring

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The typed helpers put each address where the kernel reads it.
func TestSQEHelpersFillTheKernelFields(t *testing.T) {
	buf := make([]byte, 10)
	var s SQE
	s.SetBuffer(buf)
	require.Equal(t, uint64(uintptr(unsafe.Pointer(&buf[0]))), s.Addr)
	require.EqualValues(t, 10, s.Len)
	s.SetBuffer(nil)
	require.Zero(t, s.Addr)
	require.Zero(t, s.Len)

	iov := []unix.Iovec{Iovec(buf), Iovec(buf[:3])}
	require.EqualValues(t, 3, iov[1].Len)
	s.SetIovecs(iov)
	require.Equal(t, uint64(uintptr(unsafe.Pointer(&iov[0]))), s.Addr)
	require.EqualValues(t, 2, s.Len)

	var st unix.Statx_t
	s = SQE{}
	s.SetStatx(&st)
	require.Equal(t, uint64(uintptr(unsafe.Pointer(&st))), s.Off, "statx's buffer goes in addr2 (off)")
	var ts unix.Timespec
	s.SetTimespec(&ts)
	require.Equal(t, uint64(uintptr(unsafe.Pointer(&ts))), s.Addr)
	require.EqualValues(t, 1, s.Len)

	var raw unix.RawSockaddrAny
	n, err := EncodeSockaddr(&unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: 0x1234}, &raw)
	require.NoError(t, err)
	require.EqualValues(t, unix.SizeofSockaddrInet4, n)
	in := (*unix.RawSockaddrInet4)(unsafe.Pointer(&raw))
	require.Equal(t, [2]byte{0x12, 0x34}, *(*[2]byte)(unsafe.Pointer(&in.Port)), "network byte order")
	s.SetSockaddr(&raw, n)
	require.Equal(t, uint64(uintptr(unsafe.Pointer(&raw))), s.Addr)
	require.EqualValues(t, n, s.Off)
	n, err = EncodeSockaddr(&unix.SockaddrUnix{Name: "@abstract"}, &raw)
	require.NoError(t, err)
	require.EqualValues(t, 2+len("@abstract"), n, "abstract: a leading NUL, no trailing one")
}

func TestMultiCQENamesWhatPostsSeveralCompletions(t *testing.T) {
	for _, c := range []struct {
		sqe  SQE
		want string
	}{
		{SQE{Opcode: OpNop}, ""},
		{SQE{Opcode: OpRead, Flags: SqeAsync | SqeIoDrain}, ""},
		{SQE{Opcode: OpPollAdd, OpFlags: 1}, ""},
		{SQE{Opcode: OpNop, Flags: SqeIoLink}, "IOSQE_IO_LINK"},
		{SQE{Opcode: OpNop, Flags: SqeIoHardlink}, "IOSQE_IO_HARDLINK"},
		{SQE{Opcode: OpNop, Flags: SqeCQESkipSuccess}, "IOSQE_CQE_SKIP_SUCCESS"},
		{SQE{Opcode: OpPollAdd, Len: PollAddMulti}, "IORING_POLL_ADD_MULTI"},
		{SQE{Opcode: OpAccept, Ioprio: AcceptMultishot}, "IORING_ACCEPT_MULTISHOT"},
		{SQE{Opcode: OpRecv, Ioprio: RecvMultishot}, "IORING_RECV_MULTISHOT"},
		{SQE{Opcode: OpRecvmsg, Ioprio: RecvMultishot}, "IORING_RECV_MULTISHOT"},
		{SQE{Opcode: OpTimeout, OpFlags: TimeoutMultishot}, "IORING_TIMEOUT_MULTISHOT"},
		{SQE{Opcode: OpSendZC}, "a zero-copy send (a second, notification completion)"},
		{SQE{Opcode: OpReadMultishot}, "IORING_OP_READ_MULTISHOT"},
	} {
		require.Equal(t, c.want, c.sqe.MultiCQE(), "%+v", c.sqe)
	}
}

// PushSQE and the CQ accessors, as the pool's loop uses them.
func TestPushSQEAndCQAccessors(t *testing.T) {
	r := newRing(t, 4)
	for i := range 4 {
		require.True(t, r.PushSQE(&SQE{Opcode: OpNop, UserData: uint64(i + 1)}))
	}
	require.Zero(t, r.SQSpace())
	require.False(t, r.PushSQE(&SQE{Opcode: OpNop}), "the SQ is full")
	n, err := r.SubmitAndWait(4)
	require.NoError(t, err)
	require.Equal(t, 4, n)
	require.EqualValues(t, 4, r.SQSpace())
	head, tail := r.CQ()
	require.EqualValues(t, 4, tail-head)
	for i := head; i != tail; i++ {
		require.EqualValues(t, i-head+1, r.CQE(i).UserData)
	}
	r.AdvanceCQ(tail)
	require.False(t, r.CQReady())
}
