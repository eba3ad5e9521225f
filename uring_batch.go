//go:build linux

package iopool

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/uring"
)

// Batch queues several io_uring operations from one task and waits for all
// of them with one suspension. A task that waits for each of its operations
// pays two coroutine switches per operation; a batch pays them once. The
// operations reach the kernel in the loop's next io_uring_enter, with
// everything else queued in that cycle, and may complete in any order.
//
//	b := u.NewBatch()
//	for i := range bufs {
//		if err := b.Read(t, fd, bufs[i], int64(i)*blockSize); err != nil {
//			...
//		}
//	}
//	if err := b.Await(t); err != nil {
//		return err // canceled: every queued operation was canceled too
//	}
//	for i := range bufs {
//		n, err := b.Result(i)
//		...
//	}
//
// Await is what hands the results over; the operations themselves need no
// Await to be released: each one's buffers are unpinned and its slot freed
// when its completion arrives, so a batch whose task returns (or panics)
// without waiting holds nothing once the kernel is done, and Pool.Close
// cancels what is still in the kernel. Adding after Await starts a new batch
// on the same memory, so a reused Batch allocates nothing. A Batch is used
// by one task at a time.
type Batch struct {
	u       *Uring
	entries []batchEntry // loop: the operations queued, in order
	pending int          // loop: entries whose final completion has not arrived
	waker   Waker        // loop: the waiting task, woken when pending reaches 0
	waited  bool         // entries hold the last Await's results
}

// batchEntry is one operation of a Batch.
type batchEntry struct {
	op     *opSlot // while in the kernel; nil once its final completion arrived
	res    int32   // its result, written by finish
	opcode uint8
	name   string // for its error; "" names it by opcode
}

// NewBatch returns an empty batch of operations on u.
func (u *Uring) NewBatch() *Batch { return &Batch{u: u} }

// Len reports how many operations the batch holds: queued ones before Await,
// results after it.
func (b *Batch) Len() int { return len(b.entries) }

// Nop queues a no-op.
func (b *Batch) Nop(t *Task) error {
	sqe := uring.SQE{Opcode: uring.OpNop}
	if _, err := b.queue(t, "nop", &sqe, nil); err != nil {
		return err
	}
	return nil
}

// Read queues a read into buf from fd at offset off (-1: the file
// position); its result is the byte count.
func (b *Batch) Read(t *Task, fd int, buf []byte, off int64) error {
	return b.rw(t, "read", uring.OpRead, fd, buf, off)
}

// Write queues a write of buf to fd at offset off (-1: the file position);
// like pwrite, its result may be less than len(buf).
func (b *Batch) Write(t *Task, fd int, buf []byte, off int64) error {
	return b.rw(t, "write", uring.OpWrite, fd, buf, off)
}

func (b *Batch) rw(t *Task, name string, opcode uint8, fd int, buf []byte, off int64) error {
	if err := checkRW(name, buf, off); err != nil {
		return err
	}
	sqe := bufSQE(opcode, fd, buf, off, 0)
	_, err := b.queue(t, name, &sqe, nil, buf)
	return err
}

// Submit queues any operation: prep fills the SQE (user_data is set by the
// batch) and keep lists the buffers the kernel will use, pinned until the
// completion. SQEs that would post several completions or none are refused
// as by Uring.Submit; a nil prep panics.
func (b *Batch) Submit(t *Task, prep func(*SQE), keep ...[]byte) error {
	if err := b.u.checkTask(t); err != nil {
		return err
	}
	sqe, lent, err := prepSQE("Batch.Submit", prep)
	if err != nil {
		return err
	}
	_, err = b.queue(t, "", &sqe, lent, keep...)
	return err
}

// queue adds an entry: it takes a slot, pins lent (what a user's SQE
// setters pointed at) and keep, and pushes the SQE.
func (b *Batch) queue(t *Task, name string, sqe *uring.SQE, lent []any, keep ...[]byte) (*opSlot, error) {
	if err := b.u.checkTask(t); err != nil {
		return nil, err
	}
	if b.waited {
		b.reset()
	}
	op := b.u.take(sqe.Opcode)
	op.pinLent(lent, keep)
	op.batch, op.entry = b, len(b.entries)
	b.entries = append(b.entries, batchEntry{op: op, opcode: sqe.Opcode, name: name})
	b.pending++
	b.u.push(op, sqe)
	return op, nil
}

// reset forgets the entries (after Await, or a canceled Await).
func (b *Batch) reset() {
	b.waited = false
	clear(b.entries)
	b.entries = b.entries[:0]
}

// complete records entry i's result; the last one wakes the waiter. Called
// by finish. Loop only.
func (b *Batch) complete(i int, res int32, wakers *WakerList) {
	e := &b.entries[i]
	e.res, e.op = res, nil
	if b.pending--; b.pending == 0 && b.waker != nil {
		wakers.Add(b.waker)
		b.waker = nil
	}
}

// Await suspends task t until every queued operation has completed; then
// Result gives each one's outcome. An empty batch returns at once. If the
// task is canceled while operations are still in the kernel, Await returns
// ErrCanceled, cancels them (their buffers stay pinned until their
// completions arrive) and closes the fds that completed ones opened or
// accepted; the batch is empty afterwards. If every operation had completed
// when the cancel was seen, the results win and Await returns nil.
func (b *Batch) Await(t *Task) error {
	if b.waited || len(b.entries) == 0 {
		return nil
	}
	b.u.checkPool(t)
	_, err := Await[struct{}](t, (*batchWait)(b))
	if err != nil && b.pending > 0 {
		for _, e := range b.entries {
			switch {
			case e.op != nil:
				b.u.abandon(e.op)
			case returnsFd(e.opcode) && e.res >= 0:
				unix.Close(int(e.res)) // nobody will take it
			}
		}
		b.pending, b.waker = 0, nil
		b.reset()
		return err
	}
	b.waited = true
	return nil
}

// batchWait is a Batch awaited by its task: ready when every entry has
// completed. Only the last completion wakes the task.
type batchWait Batch

func (f *batchWait) Poll(cx *PollContext) (struct{}, error) {
	if f.pending == 0 {
		return struct{}{}, nil
	}
	f.waker = cx.waker
	return struct{}{}, ErrPending
}

// Result returns the outcome of the i-th operation queued before the last
// Await: the CQE's result, or an error naming the operation for a negative
// one. Calling it before Await, or with i out of range, is a programmer error
// and panics.
func (b *Batch) Result(i int) (int32, error) {
	if !b.waited {
		panic("iopool: Batch.Result called before Await")
	}
	if i < 0 || i >= len(b.entries) {
		panic(fmt.Sprintf("iopool: Batch.Result(%d) out of range: the batch held %d operations", i, len(b.entries)))
	}
	e := &b.entries[i]
	if e.res < 0 {
		name := e.name
		if name == "" {
			name = opName(e.opcode)
		}
		return e.res, opError(fmt.Sprintf("%s (batch entry %d)", name, i), e.res)
	}
	return e.res, nil
}
