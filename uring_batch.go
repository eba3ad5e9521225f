package iopool

import (
	"fmt"

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
//	if err := b.Wait(t); err != nil {
//		return err // canceled: every queued operation was canceled too
//	}
//	for i := range bufs {
//		n, err := b.Result(i)
//		...
//	}
//
// Every operation added must be waited for: Wait is what recycles the
// operations and unpins their buffers (a batch left unwaited holds them
// until the pool closes). Adding after Wait starts a new batch
// on the same memory, so a reused Batch allocates nothing. A Batch is used
// by one task at a time.
type Batch struct {
	u      *Uring
	ops    []*uringOp
	names  []string
	res    []int32
	next   int  // ops[:next] are known to be done (while waiting)
	waited bool // res and names hold the last Wait's results
}

// NewBatch returns an empty batch of operations on u.
func (u *Uring) NewBatch() *Batch { return &Batch{u: u} }

// Len reports how many operations the batch holds: queued ones before Wait,
// results after it.
func (b *Batch) Len() int {
	if b.waited {
		return len(b.res)
	}
	return len(b.ops)
}

// Nop queues a no-op.
func (b *Batch) Nop(t *Task) error {
	b.reuse()
	op, err := b.u.prepare(t)
	if err != nil {
		return err
	}
	b.push(op, "nop", uring.SQE{Opcode: uring.OpNop})
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
	b.reuse()
	op, sqe, err := b.u.prepareRW(t, name, opcode, fd, buf, off)
	if err != nil {
		return err
	}
	b.push(op, name, sqe)
	return nil
}

// Submit queues any operation: prep fills the SQE (user_data is set by the
// batch) and keep lists the buffers the kernel will use, pinned until the
// completion.
func (b *Batch) Submit(t *Task, prep func(*SQE), keep ...[]byte) error {
	b.reuse()
	op, err := b.u.prepare(t, keep...)
	if err != nil {
		return err
	}
	var sqe uring.SQE
	prep(&sqe)
	b.push(op, "", sqe)
	return nil
}

// reuse forgets the last Wait's results before the first new entry.
func (b *Batch) reuse() {
	if b.waited {
		b.waited = false
		clear(b.names)
		b.names, b.res = b.names[:0], b.res[:0]
	}
}

func (b *Batch) push(op *uringOp, name string, sqe uring.SQE) {
	sqe.UserData = op.userData
	if name == "" {
		name = opName(sqe.Opcode)
	}
	b.u.pushOnLoop(&sqe)
	b.ops = append(b.ops, op)
	b.names = append(b.names, name)
}

// Wait suspends task t until every queued operation has completed; then
// Result gives each one's outcome. An empty batch returns at once. If the
// task is canceled, Wait returns ErrCanceled and cancels the operations
// still in the kernel (their buffers stay pinned until their completions
// arrive); the batch is empty afterwards.
func (b *Batch) Wait(t *Task) error {
	if b.waited || len(b.ops) == 0 {
		return nil
	}
	b.next = 0
	_, err := Await[struct{}](t, (*batchWait)(b))
	for _, op := range b.ops {
		if err != nil {
			b.u.abandon(op)
			continue
		}
		b.res = append(b.res, op.res)
		b.u.release(op)
	}
	clear(b.ops)
	b.ops = b.ops[:0]
	if err != nil {
		clear(b.names)
		b.names = b.names[:0]
		return err
	}
	b.waited = true
	return nil
}

// batchWait is a Batch awaited by its task: ready when every op is done.
// Only the first op not known to be done holds the task's waker, so the
// completions of a batch wake the task once they are all in, not once each.
type batchWait Batch

func (f *batchWait) Poll(cx *Context) (struct{}, bool) {
	for ; f.next < len(f.ops); f.next++ {
		if op := f.ops[f.next]; !op.done {
			op.waker = cx.waker
			return struct{}{}, false
		}
	}
	return struct{}{}, true
}

// Result returns the outcome of the i-th operation queued before the last
// Wait: the CQE's result, or an error naming the operation for a negative
// one. Calling it before Wait, or with i out of range, is a programmer error
// and panics.
func (b *Batch) Result(i int) (int32, error) {
	if !b.waited {
		panic("iopool: Batch.Result called before Wait")
	}
	if i < 0 || i >= len(b.res) {
		panic(fmt.Sprintf("iopool: Batch.Result(%d) out of range: the batch held %d operations", i, len(b.res)))
	}
	if res := b.res[i]; res < 0 {
		return res, opError(fmt.Sprintf("%s (batch entry %d)", b.names[i], i), res)
	}
	return b.res[i], nil
}
