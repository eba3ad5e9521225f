//go:build linux

package uring

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Typed SQE helpers: the one place where Go memory becomes an address in an
// SQE. Each stores the address of Go memory as the integer the kernel reads.
//
// Why that is safe, for all of them: an SQE is plain data in memory the
// kernel shares with us (not Go heap), so storing an address there hides
// nothing from the garbage collector that it needs: the caller (iopool's op
// table; for a user's iopool.SQE, the memory its setters lent and the call's
// keep list) keeps the memory reachable and pinned with a runtime.Pinner
// from before the SQE is published until its final completion has been
// consumed, and Go's heap does not move pinned objects. The helpers never
// turn an integer back into a pointer.

// addrOf is the address of p as the kernel wants it.
func addrOf(p unsafe.Pointer) uint64 { return uint64(uintptr(p)) }

// BufAddr returns the address of b's first byte, 0 for an empty b.
func BufAddr(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return addrOf(unsafe.Pointer(unsafe.SliceData(b)))
}

// SetBuffer points the SQE at b: addr is b's first byte, len its length
// (reads, writes, send, recv). The caller keeps b pinned until the
// completion.
func (s *SQE) SetBuffer(b []byte) {
	s.Addr, s.Len = BufAddr(b), uint32(len(b))
}

// SetIovecs points the SQE at iov (readv, writev): addr is the first
// iovec, len their count. The caller pins iov and every buffer it names.
func (s *SQE) SetIovecs(iov []unix.Iovec) {
	s.Len = uint32(len(iov))
	s.Addr = 0
	if len(iov) > 0 {
		s.Addr = addrOf(unsafe.Pointer(&iov[0]))
	}
}

// SetPath points addr at a NUL-terminated path (openat, statx), as made by
// unix.BytePtrFromString. The caller pins it.
func (s *SQE) SetPath(p *byte) { s.Addr = addrOf(unsafe.Pointer(p)) }

// SetStatx points addr2 (the off field) at the statx buffer the kernel
// fills. The caller pins it.
func (s *SQE) SetStatx(st *unix.Statx_t) { s.Off = addrOf(unsafe.Pointer(st)) }

// SetTimespec points addr at ts and sets len to 1, as IORING_OP_TIMEOUT
// wants. The caller pins ts.
func (s *SQE) SetTimespec(ts *unix.Timespec) {
	s.Addr, s.Len = addrOf(unsafe.Pointer(ts)), 1
}

// SetSockaddr points addr at a socket address of n bytes and puts n in
// addr2 (connect). The caller pins raw.
func (s *SQE) SetSockaddr(raw *unix.RawSockaddrAny, n uint32) {
	s.Addr, s.Off = addrOf(unsafe.Pointer(raw)), uint64(n)
}

// Iovec is the iovec of b. The caller pins b.
func Iovec(b []byte) unix.Iovec {
	v := unix.Iovec{Base: unsafe.SliceData(b)}
	v.SetLen(len(b))
	return v
}

// EncodeSockaddr writes sa in the kernel's layout into raw and returns its
// length. sa is a *unix.SockaddrInet4, *unix.SockaddrInet6 or
// *unix.SockaddrUnix (a name starting with '@' is abstract).
//
// Why the casts are safe: unix.RawSockaddrAny is the size of the largest
// sockaddr the kernel takes (struct sockaddr_storage's first 112 bytes), so
// each cast views a prefix of raw, which lives as long as the caller's.
func EncodeSockaddr(sa unix.Sockaddr, raw *unix.RawSockaddrAny) (uint32, error) {
	*raw = unix.RawSockaddrAny{}
	port := func(p *uint16, v int) error {
		if v < 0 || v > 0xffff {
			return fmt.Errorf("port %d out of range", v)
		}
		b := (*[2]byte)(unsafe.Pointer(p))
		b[0], b[1] = byte(v>>8), byte(v) // network byte order
		return nil
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		in := (*unix.RawSockaddrInet4)(unsafe.Pointer(raw))
		in.Family, in.Addr = unix.AF_INET, sa.Addr
		return unix.SizeofSockaddrInet4, port(&in.Port, sa.Port)
	case *unix.SockaddrInet6:
		in := (*unix.RawSockaddrInet6)(unsafe.Pointer(raw))
		in.Family, in.Addr, in.Scope_id = unix.AF_INET6, sa.Addr, sa.ZoneId
		return unix.SizeofSockaddrInet6, port(&in.Port, sa.Port)
	case *unix.SockaddrUnix:
		un := (*unix.RawSockaddrUnix)(unsafe.Pointer(raw))
		n := len(sa.Name)
		if n == 0 || n >= len(un.Path) {
			return 0, fmt.Errorf("unix socket path %q: want 1..%d bytes", sa.Name, len(un.Path)-1)
		}
		un.Family = unix.AF_UNIX
		for i := range n {
			un.Path[i] = int8(sa.Name[i])
		}
		size := uint32(2 + n + 1)
		if sa.Name[0] == '@' { // abstract: a leading NUL, no trailing one
			un.Path[0] = 0
			size--
		}
		return size, nil
	case nil:
		return 0, errors.New("nil address")
	default:
		return 0, fmt.Errorf("unsupported address type %T", sa)
	}
}

// MultiCQE reports why the SQE may post more than one completion, or
// several SQEs' completions may be tied together, or "" if it posts exactly
// one: a flag that links it to the next SQE (IOSQE_IO_LINK,
// IOSQE_IO_HARDLINK), one that suppresses its completion
// (IOSQE_CQE_SKIP_SUCCESS), or a multishot variant of its opcode.
func (s *SQE) MultiCQE() string {
	switch {
	case s.Flags&SqeIoLink != 0:
		return "IOSQE_IO_LINK"
	case s.Flags&SqeIoHardlink != 0:
		return "IOSQE_IO_HARDLINK"
	case s.Flags&SqeCQESkipSuccess != 0:
		return "IOSQE_CQE_SKIP_SUCCESS"
	}
	switch s.Opcode {
	case OpPollAdd:
		if s.Len&PollAddMulti != 0 {
			return "IORING_POLL_ADD_MULTI"
		}
	case OpAccept:
		if s.Ioprio&AcceptMultishot != 0 {
			return "IORING_ACCEPT_MULTISHOT"
		}
	case OpRecv, OpRecvmsg:
		if s.Ioprio&RecvMultishot != 0 {
			return "IORING_RECV_MULTISHOT"
		}
	case OpTimeout:
		if s.OpFlags&TimeoutMultishot != 0 {
			return "IORING_TIMEOUT_MULTISHOT"
		}
	case OpSendZC, OpSendmsgZC:
		return "a zero-copy send (a second, notification completion)"
	case OpReadMultishot:
		return "IORING_OP_READ_MULTISHOT"
	}
	return ""
}
