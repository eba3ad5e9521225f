//go:build linux

package iopool

// The io_uring op table: one slot per operation in flight, its states and
// transitions (take, pin, finish, abandon). The ownership rule is in
// uring.go's header: finish is the one place a slot's memory is unpinned.

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/uring"
)

// cancelUserData marks the SQEs whose completions are ignored (cancels).
const cancelUserData = 0

// opState is the state of one slot of the op table.
//
//	state      meaning                                           the waiter
//	free       on u.free; nothing pinned                         none
//	inKernel   its SQE is in the SQ or in the kernel; the memory  a task (run), a batch entry,
//	           it lends is pinned                                 or a Completion (Start)
//	abandoned  in the kernel, nobody waits: a cancel is queued   none
//	leaked     the kernel kept it past Close's deadline; kept     none
//	           pinned and reachable for the life of the process
//
//	transition            caller                       what happens
//	free → inKernel       take, then push (loop)       buffers pinned, then the SQE goes into the SQ
//	inKernel → abandoned  abandon (loop): the waiter   IORING_OP_ASYNC_CANCEL queued
//	                      gave up (its task canceled)
//	inKernel → free       finish, at the final CQE     unpin; the result goes to the waiter, woken
//	abandoned → free      finish, at the final CQE     unpin; a new fd in the result (openat,
//	                                                   accept) is closed: nobody takes it
//	inKernel, abandoned   close, after its deadline    remote waiters see ErrClosed
//	  → leaked
//
// A CQE with IORING_CQE_F_MORE is not final: the op stays in the kernel
// (the submitting calls refuse multishot SQEs, so this is a safety net). An
// operation started with Start is queued on u.remote (under u.mu) until the
// loop takes a slot for it. "Completed" is the waiter's state, not the
// slot's: finish writes the result into the waiter's opResult (done) and
// frees the slot at once, so an operation nobody waits for holds nothing.
type opState uint8

const (
	opFree opState = iota
	opInKernel
	opAbandoned
	opLeaked
)

// opSlot is one slot of the io_uring op table: an operation in the kernel
// (or a free slot). Every field is the loop's.
type opSlot struct {
	state    opState
	index    uint32         // u.ops[index] == op; user_data is index+1; fixed
	closesFd bool           // the result is a new fd (openat, accept): closed if abandoned
	remote   bool           // result is a Completion's: written under u.mu
	result   *opResult      // the waiter of a task's op or of a Completion; nil otherwise
	batch    *Batch         // the waiter of a batch entry; nil otherwise
	entry    int            // the entry's index in batch
	pinner   runtime.Pinner // buffers, iovecs, paths, sockaddrs lent to the kernel
	iov      []unix.Iovec   // Readv/Writev's iovecs, reused
	ts       unix.Timespec  // Timeout's time
	sa       unix.RawSockaddrAny
}

// opResult receives an operation's result. For a task's operation it is
// the task's (taskExt.uringRes, loop only); for a Completion it is the
// Completion's (under u.mu).
type opResult struct {
	res    int32
	done   bool  // the final CQE was consumed: res holds its result
	closed bool  // Close canceled the operation (Completions only)
	opcode uint8 // the operation's opcode, for the task table (tasks only)
	fd     int32 // the operation's fd, for the task table (tasks only)
	waker  Waker // woken when done
}

// take moves a free op to inKernel for an SQE with opcode; the caller pins
// the op's memory and pushes its SQE before anything can fail. Loop only.
func (u *Uring) take(opcode uint8) *opSlot {
	var op *opSlot
	if n := len(u.free); n > 0 {
		op = u.free[n-1]
		u.free[n-1] = nil
		u.free = u.free[:n-1]
	} else {
		op = &opSlot{index: uint32(len(u.ops))}
		u.ops = append(u.ops, op)
	}
	op.state = opInKernel
	op.closesFd = returnsFd(opcode)
	u.inflight++
	return op
}

// returnsFd reports whether an opcode's result is a new fd.
func returnsFd(opcode uint8) bool {
	switch opcode {
	case uring.OpOpenat, uring.OpOpenat2, uring.OpAccept, uring.OpSocket:
		return true
	}
	return false
}

// pin pins b's memory for the kernel until the op's final completion.
func (op *opSlot) pin(b []byte) {
	if len(b) > 0 {
		op.pinner.Pin(&b[0])
	}
}

// pinLent pins, until the op's final completion, the memory a user's SQE
// lent to the kernel: what its setters pointed at (lent, see SQE) and the
// buffers of the call's keep list.
func (op *opSlot) pinLent(lent []any, keep [][]byte) {
	for _, p := range lent {
		op.pinner.Pin(p)
	}
	for _, b := range keep {
		op.pin(b)
	}
}

// finish is the final completion of op: the one place where the memory an
// op lent to the kernel is unpinned and its slot freed. The result goes to
// the waiter, whose waker is collected; an abandoned op's new fd is closed.
// Loop only.
func (u *Uring) finish(op *opSlot, res int32, wakers *WakerList) {
	op.pinner.Unpin()
	clear(op.iov)
	op.iov = op.iov[:0]
	switch {
	case op.state == opAbandoned:
		if op.closesFd && res >= 0 {
			// Nobody takes the fd: its number is ours to close.
			unix.Close(int(res))
		}
	case op.state != opInKernel:
		panic(fmt.Sprintf("iopool: io_uring completion for op %d in state %d", op.index, op.state))
	case op.batch != nil:
		op.batch.complete(op.entry, res, wakers)
	case op.remote:
		u.mu.Lock()
		r := op.result
		r.res, r.done = res, true
		w := r.waker
		r.waker = nil
		u.mu.Unlock()
		wakers.Add(w)
	default:
		r := op.result
		r.res, r.done = res, true
		wakers.Add(r.waker)
		r.waker = nil
	}
	op.state, op.closesFd, op.remote, op.result, op.batch, op.entry = opFree, false, false, nil, nil, 0
	u.free = append(u.free, op)
	u.inflight--
}

// abandon detaches op from its waiter, which gave up, and cancels it in the
// kernel; finish releases it at its completion. Loop only. The cancel names
// the op by its user_data, which cannot mean another operation by the time
// the kernel reads it: the slot is freed only at the op's final CQE, and an
// SQE that reuses it is queued after the cancel, which the kernel handles
// at submission, in order.
func (u *Uring) abandon(op *opSlot) {
	op.state, op.result, op.batch, op.entry = opAbandoned, nil, nil, 0
	u.pushSQE(&uring.SQE{Opcode: uring.OpAsyncCancel, Addr: uint64(op.index) + 1, UserData: cancelUserData})
}
