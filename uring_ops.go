//go:build linux

package iopool

// The operations a task runs on its pool's io_uring. Each one checks its
// input, takes a slot of the op table, pins what it lends to the kernel,
// pushes its SQE and waits (run). Nothing that can fail or panic (bad
// input, a user's prep function) runs after the slot is taken.

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/uring"
)

// checkTask checks that t may submit on u now: t is the running task (else
// it panics, as every *Task misuse does), of u's own pool (a task of
// another pool runs on another loop and would write this ring's submission
// queue from the wrong goroutine: it panics too), not canceled, and u is
// not closing.
func (u *Uring) checkTask(t *Task) error {
	u.checkPool(t)
	if u.closing {
		return ErrClosed
	}
	if t.canceled.Load() {
		return t.canceledErr()
	}
	return nil
}

// checkPool panics unless t is the running task and one of u's pool.
func (u *Uring) checkPool(t *Task) {
	t.checkCurrent()
	if t.pool != u.p {
		panic(fmt.Sprintf("iopool: task %q used the io_uring of another pool; a ring takes operations from its own pool's tasks, and from other goroutines through Uring.Start", t.name))
	}
}

// run pushes op's SQE and awaits, inside task t, its final completion. A
// canceled wait (Await's error, which carries the cancel's cause) abandons
// the op: it is canceled in the kernel and released at its completion.
// Unless the completion was consumed first: then the result wins over the
// cancel, so that a new fd or the bytes moved are never lost. name (or, if
// empty, the opcode) names the operation in its error.
func (u *Uring) run(t *Task, name string, op *opSlot, sqe *uring.SQE) (int32, error) {
	r := &t.extra().uringRes
	*r = opResult{opcode: sqe.Opcode, fd: sqe.Fd}
	op.result = r
	u.push(op, sqe)
	if _, err := Await[struct{}](t, (*opWait)(r)); err != nil && !r.done {
		u.abandon(op)
		r.waker = nil
		return -1, err
	}
	res := r.res
	if res < 0 {
		if name == "" {
			name = opName(sqe.Opcode)
		}
		return res, opError(name, res)
	}
	return res, nil
}

// opWait is a task's operation awaited: ready once finish has consumed its
// final completion. Loop only, like the task's opResult it is.
type opWait opResult

func (w *opWait) Poll(cx *PollContext) (struct{}, error) {
	if w.done {
		return struct{}{}, nil
	}
	w.waker = cx.waker // finish takes it: re-armed at every poll
	return struct{}{}, ErrPending
}

// opError is the error of a CQE with a negative result.
func opError(name string, res int32) error {
	return fmt.Errorf("iopool: %w", os.NewSyscallError("io_uring "+name, unix.Errno(-res)))
}

// pathError is the error of a negative result of an operation on path: an
// *os.PathError naming it, so errors.Is(err, fs.ErrNotExist) works too.
func pathError(name, path string, res int32) error {
	return fmt.Errorf("iopool: %w", &os.PathError{Op: "io_uring " + name, Path: path, Err: unix.Errno(-res)})
}

// opName names an opcode for an error message.
func opName(opcode uint8) string {
	return fmt.Sprintf("op %d", opcode)
}

// checkSQE refuses an SQE from a user's prep function that would post more
// or fewer than one completion, or tie its fate to its neighbour's in the
// SQ: every operation here lives from one SQE to one final CQE.
func checkSQE(call string, sqe *uring.SQE) error {
	if why := sqe.MultiCQE(); why != "" {
		return fmt.Errorf("%w: %s with %s: an operation here waits for exactly one completion of its own", ErrUnsupportedSQE, call, why)
	}
	return nil
}

// prepSQE runs a user's prep function on a fresh SQE, before any slot is
// taken: a prep that panics leaves nothing behind. It returns the ring's
// entry and the memory the SQE's setters lent, for the op to pin.
func prepSQE(call string, prep func(*SQE)) (sqe uring.SQE, lent []any, err error) {
	if prep == nil {
		panic("iopool: " + call + " called with a nil prep function")
	}
	var s SQE
	prep(&s)
	sqe = s.entry()
	return sqe, s.lent, checkSQE(call, &sqe)
}

func checkRW(name string, buf []byte, off int64) error {
	if buf == nil {
		return fmt.Errorf("iopool: io_uring %s: nil buffer", name)
	}
	if off < -1 {
		return fmt.Errorf("iopool: io_uring %s: negative offset %d (-1 means the file position)", name, off)
	}
	if len(buf) > 1<<31-1 {
		return fmt.Errorf("iopool: io_uring %s: buffer of %d bytes is larger than one operation can take", name, len(buf))
	}
	return nil
}

// bufSQE is the SQE of a read, write, send or recv of buf: off is the file
// offset of a read or write, flags the MSG_ flags of a send or recv.
func bufSQE(opcode uint8, fd int, buf []byte, off int64, flags int) uring.SQE {
	sqe := uring.SQE{Opcode: opcode, Fd: int32(fd), Off: uint64(off), OpFlags: uint32(flags)}
	sqe.SetBuffer(buf)
	return sqe
}

// Nop submits a no-op and waits for its completion.
func (u *Uring) Nop(t *Task) error {
	if err := u.checkTask(t); err != nil {
		return err
	}
	_, err := u.run(t, "nop", u.take(uring.OpNop), &uring.SQE{Opcode: uring.OpNop})
	return err
}

// Read reads into buf from fd at offset off, inside task t. An offset of -1
// reads at the file's position and advances it, as read(2) does; pipes and
// sockets ignore the offset.
func (u *Uring) Read(t *Task, fd int, buf []byte, off int64) (int, error) {
	return u.transfer(t, "read", uring.OpRead, fd, buf, off, 0)
}

// Write writes buf to fd at offset off, inside task t. Like pwrite, it may
// write less than len(buf).
func (u *Uring) Write(t *Task, fd int, buf []byte, off int64) (int, error) {
	return u.transfer(t, "write", uring.OpWrite, fd, buf, off, 0)
}

// Send sends buf on a socket, inside task t; flags are send(2)'s MSG_ flags.
func (u *Uring) Send(t *Task, fd int, buf []byte, flags int) (int, error) {
	return u.transfer(t, "send", uring.OpSend, fd, buf, 0, flags)
}

// Recv receives into buf from a socket, inside task t; flags are recv(2)'s
// MSG_ flags.
func (u *Uring) Recv(t *Task, fd int, buf []byte, flags int) (int, error) {
	return u.transfer(t, "recv", uring.OpRecv, fd, buf, 0, flags)
}

// transfer is Read, Write, Send and Recv: one buffer, pinned until the
// completion; off for a file, flags for a socket.
func (u *Uring) transfer(t *Task, name string, opcode uint8, fd int, buf []byte, off int64, flags int) (int, error) {
	if err := checkRW(name, buf, off); err != nil {
		return 0, err
	}
	if err := u.checkTask(t); err != nil {
		return 0, err
	}
	sqe := bufSQE(opcode, fd, buf, off, flags)
	op := u.take(opcode)
	op.pin(buf)
	n, err := u.run(t, name, op, &sqe)
	return int(max(n, 0)), err
}

// Readv reads into bufs from fd at offset off, inside task t.
func (u *Uring) Readv(t *Task, fd int, bufs [][]byte, off int64) (int, error) {
	return u.rwv(t, "readv", uring.OpReadv, fd, bufs, off)
}

// Writev writes bufs to fd at offset off, inside task t.
func (u *Uring) Writev(t *Task, fd int, bufs [][]byte, off int64) (int, error) {
	return u.rwv(t, "writev", uring.OpWritev, fd, bufs, off)
}

func (u *Uring) rwv(t *Task, name string, opcode uint8, fd int, bufs [][]byte, off int64) (int, error) {
	if off < -1 {
		return 0, fmt.Errorf("iopool: io_uring %s: negative offset %d (-1 means the file position)", name, off)
	}
	if len(bufs) == 0 {
		return 0, fmt.Errorf("iopool: io_uring %s: no buffers", name)
	}
	if err := u.checkTask(t); err != nil {
		return 0, err
	}
	op := u.take(opcode)
	for _, b := range bufs {
		op.pin(b)
		op.iov = append(op.iov, uring.Iovec(b))
	}
	op.pinner.Pin(&op.iov[0])
	sqe := uring.SQE{Opcode: opcode, Fd: int32(fd), Off: uint64(off)}
	sqe.SetIovecs(op.iov)
	n, err := u.run(t, name, op, &sqe)
	return int(max(n, 0)), err
}

// Fsync flushes fd's data and metadata to storage, inside task t.
func (u *Uring) Fsync(t *Task, fd int) error {
	return u.runOnFd(t, "fsync", uring.OpFsync, fd)
}

// CloseFd closes fd, inside task t. (It closes a file descriptor, not the
// ring: the ring is closed by Pool.Close.)
func (u *Uring) CloseFd(t *Task, fd int) error {
	return u.runOnFd(t, "close", uring.OpClose, fd)
}

// runOnFd runs an operation on fd alone (fsync, close) inside task t.
func (u *Uring) runOnFd(t *Task, name string, opcode uint8, fd int) error {
	if err := u.checkTask(t); err != nil {
		return err
	}
	_, err := u.run(t, name, u.take(opcode), &uring.SQE{Opcode: opcode, Fd: int32(fd)})
	return err
}

// Openat opens path relative to dirfd (unix.AT_FDCWD for the working
// directory) and returns the new fd, close-on-exec, inside task t. On any
// error it returns -1. If the task is canceled while the open is in the
// kernel and the open succeeds anyway, the new fd is closed by the pool.
func (u *Uring) Openat(t *Task, dirfd int, path string, flags int, mode uint32) (int, error) {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return -1, fmt.Errorf("iopool: io_uring openat %q: %w", path, err)
	}
	if err := u.checkTask(t); err != nil {
		return -1, err
	}
	op := u.take(uring.OpOpenat)
	op.pinner.Pin(p)
	sqe := uring.SQE{Opcode: uring.OpOpenat, Fd: int32(dirfd), Len: mode, OpFlags: uint32(flags | unix.O_CLOEXEC)}
	sqe.SetPath(p)
	fd, err := u.run(t, "openat", op, &sqe)
	switch {
	case fd < 0 && err != nil && !errors.Is(err, ErrCanceled):
		return -1, pathError("openat", path, fd)
	case err != nil:
		return -1, err
	}
	return int(fd), nil
}

// Statx fills st with the status of path relative to dirfd (unix.AT_FDCWD
// for the working directory; with unix.AT_EMPTY_PATH in flags and an empty
// path, of dirfd itself), inside task t. mask says which fields are wanted
// (unix.STATX_BASIC_STATS for all the usual ones).
func (u *Uring) Statx(t *Task, dirfd int, path string, flags int, mask uint32, st *unix.Statx_t) error {
	if st == nil {
		return fmt.Errorf("iopool: io_uring statx %q: nil Statx_t", path)
	}
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return fmt.Errorf("iopool: io_uring statx %q: %w", path, err)
	}
	if err := u.checkTask(t); err != nil {
		return err
	}
	op := u.take(uring.OpStatx)
	op.pinner.Pin(p)
	op.pinner.Pin(st)
	sqe := uring.SQE{Opcode: uring.OpStatx, Fd: int32(dirfd), Len: mask, OpFlags: uint32(flags)}
	sqe.SetPath(p)
	sqe.SetStatx(st)
	res, err := u.run(t, "statx", op, &sqe)
	if res < 0 && err != nil && !errors.Is(err, ErrCanceled) {
		return pathError("statx", path, res)
	}
	return err
}

// Accept accepts a connection on the listening socket fd inside task t
// and returns the new fd, nonblocking and close-on-exec, or -1 on any
// error. Unlike a readiness wait, the kernel completes it when a connection
// arrives. The peer's address is unix.Getpeername(nfd). If the task is
// canceled while the accept is in the kernel and a connection is accepted
// anyway, the pool closes it.
func (u *Uring) Accept(t *Task, fd int) (int, error) {
	if err := u.checkTask(t); err != nil {
		return -1, err
	}
	sqe := uring.SQE{Opcode: uring.OpAccept, Fd: int32(fd), OpFlags: unix.SOCK_NONBLOCK | unix.SOCK_CLOEXEC}
	nfd, err := u.run(t, "accept", u.take(uring.OpAccept), &sqe)
	if err != nil {
		return -1, err
	}
	return int(nfd), nil
}

// Connect connects the socket fd to sa inside task t. sa is a
// *unix.SockaddrInet4, *unix.SockaddrInet6 or *unix.SockaddrUnix.
func (u *Uring) Connect(t *Task, fd int, sa unix.Sockaddr) error {
	var raw unix.RawSockaddrAny
	n, err := uring.EncodeSockaddr(sa, &raw)
	if err != nil {
		return fmt.Errorf("iopool: io_uring connect: %w", err)
	}
	if err := u.checkTask(t); err != nil {
		return err
	}
	op := u.take(uring.OpConnect)
	op.sa = raw
	op.pinner.Pin(op)
	sqe := uring.SQE{Opcode: uring.OpConnect, Fd: int32(fd)}
	sqe.SetSockaddr(&op.sa, n)
	_, err = u.run(t, "connect", op, &sqe)
	return err
}

// PollAdd waits inside task t until fd signals one of events (one-shot).
func (u *Uring) PollAdd(t *Task, fd int, events PollEvents) (PollEvents, error) {
	if err := u.checkTask(t); err != nil {
		return 0, err
	}
	sqe := uring.SQE{Opcode: uring.OpPollAdd, Fd: int32(fd), OpFlags: uint32(events)}
	res, err := u.run(t, "poll_add", u.take(uring.OpPollAdd), &sqe)
	return PollEvents(max(res, 0)), err
}

// Timeout completes after d, inside task t (an io_uring timer).
func (u *Uring) Timeout(t *Task, d time.Duration) error {
	if err := u.checkTask(t); err != nil {
		return err
	}
	op := u.take(uring.OpTimeout)
	op.ts = unix.NsecToTimespec(max(int64(d), 0))
	op.pinner.Pin(op)
	sqe := uring.SQE{Opcode: uring.OpTimeout}
	sqe.SetTimespec(&op.ts)
	_, err := u.run(t, "timeout", op, &sqe)
	if errors.Is(err, unix.ETIME) {
		return nil // the timeout expired: its success
	}
	return err
}

// Submit runs any operation inside task t: prep fills the SQE (user_data is
// set by Submit), keep lists the buffers the kernel will use, pinned until
// the completion (other memory the SQE points at: see SQE). It returns the CQE's result, or an error for a negative
// one. An SQE that would post several completions or none (multishot
// variants, IOSQE_IO_LINK, IOSQE_IO_HARDLINK, IOSQE_CQE_SKIP_SUCCESS) is
// refused with an error wrapping ErrUnsupportedSQE. A nil prep panics.
func (u *Uring) Submit(t *Task, prep func(*SQE), keep ...[]byte) (int32, error) {
	if err := u.checkTask(t); err != nil {
		return -1, err
	}
	sqe, lent, err := prepSQE("Uring.Submit", prep)
	if err != nil {
		return -1, err
	}
	op := u.take(sqe.Opcode)
	op.pinLent(lent, keep)
	return u.run(t, "", op, &sqe)
}
