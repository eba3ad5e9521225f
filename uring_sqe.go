//go:build linux

package iopool

// The submission queue entry a user fills for Uring.Submit, Uring.Start and
// Batch.Submit, and the memory its setters lend to the kernel.

import (
	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/uring"
)

// SQE is an io_uring submission queue entry (struct io_uring_sqe,
// include/uapi/linux/io_uring.h), filled by the function given to
// Uring.Submit, Uring.Start or Batch.Submit and copied into the ring when
// the operation is submitted. The fields are the kernel's; UserData is the
// pool's and is overwritten.
//
// Memory rule. The setters (SetBuffer, SetIovecs, SetPath, SetStatx,
// SetTimespec, SetSockaddr) store the address of Go memory in the entry,
// and the entry remembers that memory: the pool keeps it reachable and
// pinned from before the entry is published until the operation's final
// completion (which, after a cancel, may come after the call returned), and
// unpins it then, once. A variable whose address a setter takes therefore
// lives on the heap, never on a stack that may move. An address written
// into a field directly (Addr, Off, Addr3) is the caller's to keep
// reachable and pinned, with a runtime.Pinner, until that final completion.
type SQE struct {
	Opcode      uint8  // IORING_OP_*: OpNop, OpRead, ...
	Flags       uint8  // IOSQE_* flags
	Ioprio      uint16 // ioprio; also the multishot flags of accept and recv
	Fd          int32  // the file the operation works on
	Off         uint64 // off / addr2: a file offset, or a second address
	Addr        uint64 // addr / splice_off_in: the address of a buffer, iovec array, path, ...
	Len         uint32 // a buffer's length, an iovec count, ...
	OpFlags     uint32 // rw_flags, fsync_flags, timeout_flags, open_flags, msg_flags, ...
	UserData    uint64 // the pool's: overwritten on submission
	BufIndex    uint16 // buf_index / buf_group
	Personality uint16 // a registered credential
	FileIndex   int32  // splice_fd_in / file_index
	Addr3       uint64 // a third address (some opcodes)

	lent []any // pointers to the memory the setters lent, pinned on submission
}

// SetBuffer points the entry at b (reads, writes, send, recv): Addr is b's
// first byte, Len its length. b stays pinned until the completion.
func (s *SQE) SetBuffer(b []byte) {
	s.Addr, s.Len = uring.BufAddr(b), uint32(len(b))
	if len(b) > 0 {
		s.lend(&b[0])
	}
}

// SetIovecs points the entry at iov (readv, writev): Addr is the first
// iovec, Len their count. iov and every buffer it names stay pinned until
// the completion.
func (s *SQE) SetIovecs(iov []unix.Iovec) {
	var e uring.SQE
	e.SetIovecs(iov)
	s.Addr, s.Len = e.Addr, e.Len
	if len(iov) > 0 {
		s.lend(&iov[0])
	}
	for i := range iov {
		if iov[i].Base != nil {
			s.lend(iov[i].Base)
		}
	}
}

// SetPath points Addr at a NUL-terminated path (openat, statx), as made by
// unix.BytePtrFromString. It stays pinned until the completion.
func (s *SQE) SetPath(p *byte) {
	var e uring.SQE
	e.SetPath(p)
	s.Addr = e.Addr
	if p != nil {
		s.lend(p)
	}
}

// SetStatx points Off (addr2) at the statx buffer the kernel fills. It
// stays pinned until the completion.
func (s *SQE) SetStatx(st *unix.Statx_t) {
	var e uring.SQE
	e.SetStatx(st)
	s.Off = e.Off
	if st != nil {
		s.lend(st)
	}
}

// SetTimespec points Addr at ts and sets Len to 1, as IORING_OP_TIMEOUT
// wants. ts stays pinned until the completion.
func (s *SQE) SetTimespec(ts *unix.Timespec) {
	var e uring.SQE
	e.SetTimespec(ts)
	s.Addr, s.Len = e.Addr, e.Len
	if ts != nil {
		s.lend(ts)
	}
}

// SetSockaddr points Addr at a socket address of n bytes and puts n in Off
// (addr2), as connect wants. raw stays pinned until the completion.
func (s *SQE) SetSockaddr(raw *unix.RawSockaddrAny, n uint32) {
	var e uring.SQE
	e.SetSockaddr(raw, n)
	s.Addr, s.Off = e.Addr, e.Off
	if raw != nil {
		s.lend(raw)
	}
}

// lend records a pointer (never nil) to memory the entry names, for the op
// to pin on submission.
func (s *SQE) lend(p any) { s.lent = append(s.lent, p) }

// entry is s as the ring's entry.
func (s *SQE) entry() uring.SQE {
	return uring.SQE{
		Opcode: s.Opcode, Flags: s.Flags, Ioprio: s.Ioprio, Fd: s.Fd,
		Off: s.Off, Addr: s.Addr, Len: s.Len, OpFlags: s.OpFlags,
		UserData: s.UserData, BufIndex: s.BufIndex, Personality: s.Personality,
		FileIndex: s.FileIndex, Addr3: s.Addr3,
	}
}
