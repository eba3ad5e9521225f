//go:build linux

package uring

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MaxEntries is the largest SQ size io_uring_setup accepts.
const MaxEntries = 32768

// Ring is an io_uring instance with its SQ, CQ and SQE array mapped.
//
// Shared indices: the kernel reads the SQ tail and writes the SQ head; it
// writes the CQ tail and reads the CQ head. Each side publishes its index
// with an atomic store after writing the entries it covers, and reads the
// other side's with an atomic load before reading entries (Go's atomics are
// sequentially consistent, stronger than the release/acquire pairs needed).
type Ring struct {
	fd        int
	params    Params
	sqMap     []byte // SQ ring (and the CQ ring, with FeatSingleMmap)
	cqMap     []byte // CQ ring when mapped separately; nil otherwise
	sqeMap    []byte
	sqHead    *uint32 // kernel-written
	sqTail    *uint32 // ours
	sqFlags   *uint32 // kernel-written
	sqMask    uint32
	sqes      []SQE
	cqHead    *uint32 // ours
	cqTail    *uint32 // kernel-written
	cqMask    uint32
	cqOver    *uint32
	cqes      []CQE
	tail      uint32 // local SQ tail: SQEs up to it are prepared, not yet published
	submitted uint32 // tail value last published to the kernel
}

func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// Setup calls io_uring_setup.
func Setup(entries uint32, p *Params) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(p)), 0)
	return int(r), errnoErr(e)
}

// Enter calls io_uring_enter without a signal mask.
func Enter(fd int, toSubmit, minComplete, flags uint32) (int, error) {
	r, _, e := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(fd), uintptr(toSubmit), uintptr(minComplete), uintptr(flags), 0, 0)
	return int(r), errnoErr(e)
}

// Refused reports whether err, from New (or wrapping New's error), is the
// kernel refusing io_uring rather than a failure of the setup code: ENOSYS
// (a kernel built without io_uring, or a seccomp filter answering ENOSYS),
// EPERM (the kernel.io_uring_disabled sysctl, or seccomp) or EACCES (a
// security module). These, and only these, are a reason outside the code
// for a test to skip; any other setup error is a failure to report.
func Refused(err error) bool {
	return errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)
}

// New sets up a ring with entries SQ entries and the given setup flags.
func New(entries, flags uint32) (*Ring, error) {
	if entries == 0 || entries > MaxEntries {
		return nil, fmt.Errorf("uring: %d entries: want 1..%d", entries, MaxEntries)
	}
	r := &Ring{fd: -1}
	r.params.Flags = flags
	fd, err := Setup(entries, &r.params)
	if err != nil {
		return nil, os.NewSyscallError("io_uring_setup", err)
	}
	r.fd = fd
	if err := r.mapRings(); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func (r *Ring) mapRings() error {
	p := &r.params
	sqSize := int(p.SQOff.Array + p.SQEntries*4)
	cqSize := int(p.CQOff.Cqes + p.CQEntries*uint32(unsafe.Sizeof(CQE{})))
	single := p.Features&FeatSingleMmap != 0
	if single {
		sqSize = max(sqSize, cqSize)
	}
	var err error
	prot, fl := unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE
	if r.sqMap, err = unix.Mmap(r.fd, offSQRing, sqSize, prot, fl); err != nil {
		return os.NewSyscallError("mmap sq ring", err)
	}
	cq := r.sqMap
	if !single {
		if r.cqMap, err = unix.Mmap(r.fd, offCQRing, cqSize, prot, fl); err != nil {
			return os.NewSyscallError("mmap cq ring", err)
		}
		cq = r.cqMap
	}
	sqeSize := int(p.SQEntries) * int(unsafe.Sizeof(SQE{}))
	if r.sqeMap, err = unix.Mmap(r.fd, offSQEs, sqeSize, prot, fl); err != nil {
		return os.NewSyscallError("mmap sqes", err)
	}
	// The mappings are not Go heap: pointers into them are stable.
	u32 := func(b []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }
	r.sqHead, r.sqTail, r.sqFlags = u32(r.sqMap, p.SQOff.Head), u32(r.sqMap, p.SQOff.Tail), u32(r.sqMap, p.SQOff.Flags)
	r.sqMask = *u32(r.sqMap, p.SQOff.RingMask)
	r.cqHead, r.cqTail, r.cqOver = u32(cq, p.CQOff.Head), u32(cq, p.CQOff.Tail), u32(cq, p.CQOff.Overflow)
	r.cqMask = *u32(cq, p.CQOff.RingMask)
	r.sqes = unsafe.Slice((*SQE)(unsafe.Pointer(&r.sqeMap[0])), p.SQEntries)
	r.cqes = unsafe.Slice((*CQE)(unsafe.Pointer(&cq[p.CQOff.Cqes])), p.CQEntries)
	// The SQ index array maps ring slots to SQEs one to one, once.
	array := unsafe.Slice(u32(r.sqMap, p.SQOff.Array), p.SQEntries)
	for i := range array {
		array[i] = uint32(i)
	}
	r.tail = atomic.LoadUint32(r.sqTail)
	r.submitted = r.tail
	return nil
}

// Fd returns the ring's fd.
func (r *Ring) Fd() int { return r.fd }

// Entries returns the SQ size.
func (r *Ring) Entries() uint32 { return r.params.SQEntries }

// CQEntries returns the CQ size.
func (r *Ring) CQEntries() uint32 { return r.params.CQEntries }

// Features returns the kernel's IORING_FEAT_* bits.
func (r *Ring) Features() uint32 { return r.params.Features }

// NextSQE returns a zeroed SQE at the local tail, or nil when the SQ is
// full. The kernel sees it after the next Submit.
func (r *Ring) NextSQE() *SQE {
	head := atomic.LoadUint32(r.sqHead)
	if r.tail-head >= r.params.SQEntries {
		return nil
	}
	sqe := &r.sqes[r.tail&r.sqMask]
	*sqe = SQE{}
	r.tail++
	return sqe
}

// SQPending returns how many SQEs are prepared but not yet submitted.
func (r *Ring) SQPending() uint32 { return r.tail - r.submitted }

// CQOverflowPending reports whether the kernel holds completions that did
// not fit the CQ (flushed by an enter with GETEVENTS).
func (r *Ring) CQOverflowPending() bool {
	return atomic.LoadUint32(r.sqFlags)&SQCQOverflow != 0
}

// CQReady reports whether completions wait in the CQ.
func (r *Ring) CQReady() bool { return atomic.LoadUint32(r.cqTail) != *r.cqHead }

// Submit publishes the prepared SQEs and calls io_uring_enter once, asking
// for events only when the CQ overflowed (so the kernel flushes it). With
// nothing to do it makes no system call. It returns how many SQEs the
// kernel took.
func (r *Ring) Submit() (int, error) {
	return r.submit(0)
}

// SubmitAndWait is Submit that also waits for waitNr completions.
func (r *Ring) SubmitAndWait(waitNr uint32) (int, error) {
	return r.submit(waitNr)
}

func (r *Ring) submit(waitNr uint32) (int, error) {
	toSubmit := r.tail - r.submitted
	flags := uint32(0)
	if waitNr > 0 || r.CQOverflowPending() {
		flags |= EnterGetevents
	}
	if toSubmit == 0 && flags == 0 {
		return 0, nil
	}
	atomic.StoreUint32(r.sqTail, r.tail)
	for {
		n, err := Enter(r.fd, toSubmit, waitNr, flags)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, os.NewSyscallError("io_uring_enter", err)
		}
		r.submitted += uint32(n)
		return n, nil
	}
}

// DrainCQ calls fn with each ready completion, in order, and consumes them.
func (r *Ring) DrainCQ(fn func(CQE)) int {
	head := *r.cqHead // only we write it
	tail := atomic.LoadUint32(r.cqTail)
	n := 0
	for ; head != tail; head++ {
		fn(r.cqes[head&r.cqMask])
		n++
	}
	if n > 0 {
		atomic.StoreUint32(r.cqHead, head)
	}
	return n
}

// Flags returns the setup flags the ring was created with.
func (r *Ring) Flags() uint32 { return r.params.Flags }

// Enable enables a ring created with SetupRDisabled
// (IORING_REGISTER_ENABLE_RINGS). A single-issuer ring is bound to the
// calling thread.
func (r *Ring) Enable() error {
	_, _, e := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), registerEnable, 0, 0, 0, 0)
	if e != 0 {
		return os.NewSyscallError("io_uring_register enable_rings", e)
	}
	return nil
}

// Probe reports which opcodes the kernel supports.
type Probe struct {
	ops [probeOpsEntries]bool
}

// Supported reports whether op is supported.
func (p *Probe) Supported(op uint8) bool { return p.ops[op] }

// Probe asks the kernel which opcodes it supports (IORING_REGISTER_PROBE).
func (r *Ring) Probe() (*Probe, error) {
	// struct io_uring_probe { u8 last_op; u8 ops_len; u16 resv; u32 resv2[3];
	// struct io_uring_probe_op ops[]; }, probe_op { u8 op; u8 resv; u16 flags; u32 resv2; }
	buf := make([]byte, 16+8*probeOpsEntries)
	_, _, e := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), registerProbe,
		uintptr(unsafe.Pointer(&buf[0])), probeOpsEntries, 0, 0)
	if e != 0 {
		return nil, os.NewSyscallError("io_uring_register probe", e)
	}
	p := &Probe{}
	n := int(buf[1])
	for i := 0; i < n && i < probeOpsEntries; i++ {
		op := buf[16+8*i]
		flags := uint16(buf[16+8*i+2]) | uint16(buf[16+8*i+3])<<8
		p.ops[op] = flags&opSupported != 0
	}
	return p, nil
}

// Close unmaps the rings and closes the fd; a second Close does nothing.
func (r *Ring) Close() error {
	var errs []error
	for _, m := range []*[]byte{&r.sqeMap, &r.cqMap, &r.sqMap} {
		if *m != nil {
			errs = append(errs, unix.Munmap(*m))
			*m = nil
		}
	}
	if r.fd >= 0 {
		errs = append(errs, unix.Close(r.fd))
		r.fd = -1
	}
	return errors.Join(errs...)
}

// PushSQE copies sqe to the local SQ tail and reports whether there was
// room. The kernel sees it after the next Submit.
func (r *Ring) PushSQE(sqe *SQE) bool {
	head := atomic.LoadUint32(r.sqHead)
	if r.tail-head >= r.params.SQEntries {
		return false
	}
	r.sqes[r.tail&r.sqMask] = *sqe
	r.tail++
	return true
}

// SQSpace returns how many SQEs can be pushed before the SQ is full.
func (r *Ring) SQSpace() uint32 {
	return r.params.SQEntries - (r.tail - atomic.LoadUint32(r.sqHead))
}

// CQ returns the CQ's head (ours) and tail (the kernel's): the completions
// ready to read are CQE(head) up to CQE(tail-1). Consume them with
// AdvanceCQ(tail).
func (r *Ring) CQ() (head, tail uint32) {
	return *r.cqHead, atomic.LoadUint32(r.cqTail)
}

// CQE returns the completion at index i of the CQ (taken modulo its size),
// valid until AdvanceCQ moves the head past it.
func (r *Ring) CQE(i uint32) *CQE { return &r.cqes[i&r.cqMask] }

// AdvanceCQ consumes the completions before head, giving their slots back
// to the kernel.
func (r *Ring) AdvanceCQ(head uint32) { atomic.StoreUint32(r.cqHead, head) }
