//go:build linux

package iopool

import "time"

// SelectCase is one future of a Select, made with Case.
type SelectCase interface {
	// poll polls the future: ErrPending while it is pending; once it is
	// ready, it stores the future's value and returns its error.
	poll(cx *PollContext) error
	// future returns the case's future, for the task table (tasktable.go).
	future() any
}

type selectCase[T any] struct {
	fut Future[T]
	dst *T
}

func (c selectCase[T]) future() any { return c.fut }

func (c selectCase[T]) poll(cx *PollContext) error {
	v, err := c.fut.Poll(cx)
	if !isPending(err) && c.dst != nil {
		*c.dst = v
	}
	return err
}

// Case makes fut a case of Select; when fut is the one ready, its value is
// stored in *dst (dst may be nil to drop it) and Select returns its error.
func Case[T any](fut Future[T], dst *T) SelectCase {
	if fut == nil {
		panic("iopool: Case called with a nil future")
	}
	return selectCase[T]{fut: fut, dst: dst}
}

// Select waits inside task t until one of several futures, of any types,
// is ready, and returns the index of that case (the select statement of
// tasks). The futures are polled in order each time the task wakes, so an
// earlier case wins when several are ready; polling stops at the first
// ready one, and the others are left as they are: a pending Chan receive
// takes no value, a Handle keeps its result for a later Join, a Timer stays
// armed, a Ticker keeps its next tick. Each future only keeps the task's waker, so a late one causes at
// most a spurious wake.
//
//	timeout := t.Driver().After(time.Second) // a *Timer armed for now+1s
//	defer timeout.Stop()
//	var msg string
//	switch i, err := iopool.Select(t, iopool.Case(ch, &msg), iopool.Case[time.Time](timeout, nil)); {
//	case i < 0:      // t was canceled (err says why)
//	case err != nil: // case i failed (the Chan is closed: ErrChannelClosed)
//	case i == 0:     // msg arrived
//	case i == 1:     // timed out
//	}
//
// Select returns the index of the ready case and the error that case's
// future was ready with (nil, or its failure). If t is canceled, Select
// returns -1 and ErrCanceled.
func Select(t *Task, cases ...SelectCase) (int, error) {
	if len(cases) == 0 {
		panic("iopool: Select called with no cases")
	}
	// One more than the index, so that a canceled Await's zero is -1.
	i, err := Await[int](t, selectFuture(cases))
	return i - 1, err
}

// selectFuture is Select's future: ready with one more than the index of
// the first ready case, and that case's error.
type selectFuture []SelectCase

func (f selectFuture) Poll(cx *PollContext) (int, error) {
	for i, c := range f {
		if err := c.poll(cx); !isPending(err) {
			return i + 1, err
		}
	}
	return 0, ErrPending
}

// After returns a timer of drv's pool armed to fire d from now: a case of
// Select that times it out (a Timer is a Future of the time it fired). A d
// of zero or less fires at once. Stop the timer when another case won, or
// it stays armed until d has passed (it then wakes the task once, for
// nothing); re-arm it with SetDeadline to reuse it in a loop.
func (d *Driver) After(dur time.Duration) *Timer {
	tm := d.NewTimer()
	tm.setDeadline(d.p.monoAfter(dur)) // on the pool's clock (clock.go)
	return tm
}
