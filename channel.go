//go:build linux

package iopool

import "sync"

// Oneshot carries one value from any goroutine to one receiver: a task
// (Recv), a plain goroutine (Wait) or a poller (Poll). Sending never blocks.
type Oneshot[T any] struct {
	mu     sync.Mutex
	sent   bool  // mu: Send succeeded
	closed bool  // mu: Close was called
	taken  bool  // mu: the receiver has the value
	value  T     // mu
	waker  Waker // mu: the receiver's waker while it waits
}

// NewOneshot returns an empty oneshot.
func NewOneshot[T any]() *Oneshot[T] { return &Oneshot[T]{} }

// Send delivers v. A second Send, or a Send after Close, returns
// ErrChannelClosed and v is dropped.
func (o *Oneshot[T]) Send(v T) error {
	o.mu.Lock()
	if o.sent || o.closed {
		o.mu.Unlock()
		return ErrChannelClosed
	}
	o.sent, o.value = true, v
	w := o.waker
	o.waker = nil
	o.mu.Unlock()
	if w != nil {
		w.Wake()
	}
	return nil
}

// Close wakes the receiver; if nothing was sent it receives
// ErrChannelClosed. Closing twice is a no-op.
func (o *Oneshot[T]) Close() {
	o.mu.Lock()
	o.closed = true
	w := o.waker
	o.waker = nil
	o.mu.Unlock()
	if w != nil {
		w.Wake()
	}
}

// Poll is ready with the value once it has been sent, or with
// ErrChannelClosed if the oneshot was closed empty or its value was already
// received.
func (o *Oneshot[T]) Poll(cx *PollContext) (T, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var zero T
	switch {
	case o.sent && !o.taken:
		o.taken = true
		v := o.value
		o.value = zero
		return v, nil
	case o.closed || o.taken:
		return zero, ErrChannelClosed
	}
	o.waker = cx.waker
	return zero, ErrPending
}

// Recv waits inside task t for the value.
func (o *Oneshot[T]) Recv(t *Task) (T, error) {
	return Await[T](t, o)
}

// Wait blocks a plain goroutine until the value arrives. The sender may be
// any goroutine, so Wait does not fail when a pool is not running (unlike
// BlockOn of a pool's future): it waits for Send or Close. Called from
// inside a task before the value is there, it panics: use Recv(t).
func (o *Oneshot[T]) Wait() (T, error) {
	return blockOn[T](o, "Oneshot.Wait", "Recv(t)")
}

// Chan is an unbounded multi-producer, single-consumer channel: any
// goroutine may Send without blocking, and one receiver at a time (a task,
// a plain goroutine or a poller) takes the values in order. Its memory
// follows its length: a burst's backing array is given back once the
// receiver has drained it. A second
// concurrent receiver replaces the first one's waker.
type Chan[T any] struct {
	mu     sync.Mutex
	buf    []T        // mu: queued values are buf[head:]
	head   int        // mu
	closed bool       // mu
	waker  Waker      // mu: the receiver's waker while it waits
	park   *parkWaker // mu: reused by RecvWait
}

// NewChan returns an empty, open channel.
func NewChan[T any]() *Chan[T] { return &Chan[T]{} }

// Send queues v and wakes the receiver. It never blocks; on a closed
// channel it returns ErrChannelClosed and drops v.
func (c *Chan[T]) Send(v T) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrChannelClosed
	}
	c.buf = append(c.buf, v)
	w := c.waker
	c.waker = nil
	c.mu.Unlock()
	if w != nil {
		w.Wake()
	}
	return nil
}

// Close stops further sends. Values already queued are still received;
// after them the receiver gets ErrChannelClosed. Closing twice is a no-op.
func (c *Chan[T]) Close() {
	c.mu.Lock()
	c.closed = true
	w := c.waker
	c.waker = nil
	c.mu.Unlock()
	if w != nil {
		w.Wake()
	}
}

// Len returns the number of queued values.
func (c *Chan[T]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.buf) - c.head
}

// Poll is ready with the next value, or with ErrChannelClosed once the
// channel is closed and drained.
func (c *Chan[T]) Poll(cx *PollContext) (T, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.popLocked(); ok {
		return v, nil
	}
	var zero T
	if c.closed {
		return zero, ErrChannelClosed
	}
	c.waker = cx.waker
	return zero, ErrPending
}

// TryRecv takes the next value if one is queued, without waiting. The error
// is ErrChannelClosed once the channel is closed and drained.
func (c *Chan[T]) TryRecv() (T, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.popLocked(); ok {
		return v, true, nil
	}
	var zero T
	if c.closed {
		return zero, false, ErrChannelClosed
	}
	return zero, false, nil
}

func (c *Chan[T]) popLocked() (T, bool) {
	var zero T
	if c.head == len(c.buf) {
		return zero, false
	}
	v := c.buf[c.head]
	c.buf[c.head] = zero
	c.head++
	switch {
	case c.head == len(c.buf):
		// Drained. A backing array grown by a burst past chanKeepCap is
		// given back; a small one is kept for the next values.
		if cap(c.buf) > chanKeepCap {
			c.buf = nil
		} else {
			c.buf = c.buf[:0]
		}
		c.head = 0
	case c.head >= 64 && c.head*2 >= len(c.buf):
		n := len(c.buf) - c.head
		if cap(c.buf) > chanKeepCap && 4*n <= cap(c.buf) {
			// Mostly drained after a burst: move the rest to an array
			// of its size and give the big one back.
			c.buf = append(make([]T, 0, max(2*n, chanKeepCap)), c.buf[c.head:]...)
		} else {
			// Move the live tail down so that the backing array is
			// reused instead of growing while the receiver lags.
			copy(c.buf, c.buf[c.head:])
			clear(c.buf[n:])
			c.buf = c.buf[:n]
		}
		c.head = 0
	}
	return v, true
}

// chanKeepCap is the largest backing array, in values, that a Chan keeps
// once drained: a burst that grew it further gives it back, at the price of
// growing it again for the next such burst.
const chanKeepCap = 1024

// Recv waits inside task t for the next value.
func (c *Chan[T]) Recv(t *Task) (T, error) {
	return Await[T](t, c)
}

// RecvWait blocks a plain goroutine until the next value arrives. Like
// Oneshot.Wait it waits for any sender, not for a pool's loop, and does not
// fail when no pool runs. Called from inside a task while the channel is
// empty, it panics: use Recv(t).
func (c *Chan[T]) RecvWait() (T, error) {
	c.mu.Lock()
	if c.park == nil {
		c.park = newParkWaker()
	}
	w := c.park
	c.mu.Unlock()
	cx := &PollContext{waker: w}
	checked := false
	for {
		if v, err := c.Poll(cx); !isPending(err) {
			return v, err
		}
		if !checked {
			checked = true
			panicIfCalledFromTask("Chan.RecvWait", "Recv(t)")
		}
		w.park()
	}
}
