//go:build linux

package iopool

import (
	"fmt"
	"strings"
)

// PollEvents is a set of readiness events. The bit values are Linux's EPOLL*
// values (uapi/linux/eventpoll.h), so events from the kernel are converted
// with a mask.
type PollEvents uint32

// The readiness events.
const (
	PollIn    PollEvents = 0x001  // readable (EPOLLIN)
	PollPri   PollEvents = 0x002  // urgent or exceptional data (EPOLLPRI)
	PollOut   PollEvents = 0x004  // writable (EPOLLOUT)
	PollErr   PollEvents = 0x008  // error condition; always reported (EPOLLERR)
	PollHup   PollEvents = 0x010  // hang-up; always reported (EPOLLHUP)
	PollRdHup PollEvents = 0x2000 // the peer shut down its writing half (EPOLLRDHUP)
)

const pollEventsAll = PollIn | PollPri | PollOut | PollErr | PollHup | PollRdHup

var pollEventNames = []struct {
	ev   PollEvents
	name string
}{{PollIn, "IN"}, {PollPri, "PRI"}, {PollOut, "OUT"}, {PollErr, "ERR"}, {PollHup, "HUP"}, {PollRdHup, "RDHUP"}}

// String returns the events as "IN|OUT|RDHUP", "0" for none; unknown bits
// are shown in hex.
func (e PollEvents) String() string {
	if e == 0 {
		return "0"
	}
	var parts []string
	for _, n := range pollEventNames {
		if e&n.ev != 0 {
			parts = append(parts, n.name)
		}
	}
	if rest := e &^ pollEventsAll; rest != 0 {
		parts = append(parts, fmt.Sprintf("%#x", uint32(rest)))
	}
	return strings.Join(parts, "|")
}

// InterestSlot selects one of an FdReady's two independent waiters, so that
// one task can wait to read while another waits to write.
type InterestSlot uint8

// checkSlot panics on a slot that is neither SlotRead nor SlotWrite. Callers
// that lock before indexing call it first, so that the panic leaves no lock
// held.
func checkSlot(slot InterestSlot) {
	if slot >= slotCount {
		panic(fmt.Sprintf("iopool: invalid InterestSlot %d: use SlotRead or SlotWrite", uint8(slot)))
	}
}

// The slots.
const (
	SlotRead  InterestSlot = iota // the reader's slot
	SlotWrite                     // the writer's slot
	slotCount
)

// String returns "read" or "write".
func (s InterestSlot) String() string {
	switch s {
	case SlotRead:
		return "read"
	case SlotWrite:
		return "write"
	}
	return fmt.Sprintf("InterestSlot(%d)", uint8(s))
}

// interestSet is the readiness state of one registration: one interestSlot
// per InterestSlot. It is pure bookkeeping, guarded by its op's mutex.
//
// Per slot, with E the events asked for (always plus ERR|HUP):
//
//	pollReady(E):  (observed|delivered)&E != 0 → ready with them; request
//	               cleared; those bits move delivered → observed; the
//	               other waiters are handed back to be woken (they poll
//	               again and see the readiness too) and forgotten
//	               otherwise → pending; requested |= E; the poller's waker
//	               joins the waiters (once; a nil waker is not kept)
//	clearReady:    observed = 0 (after EAGAIN)
//	clearEvents(C): observed &^= C (after a short read: the data edge is
//	               spent, a hang-up edge is not)
//	wakeReady(R):  delivered |= R in every slot; a slot whose request
//	               meets R has all its waiters taken and its request cleared
//
// Several pollers may wait on one slot at once (two tasks reading one
// socket): all are woken by the slot's next readiness. The clears keep the
// request and the waiters, which may belong to another poller; a waiter
// that has stopped waiting (a canceled task) gets at most one spurious wake.
type interestSet struct{ slots [slotCount]interestSlot }

type interestSlot struct {
	requested PollEvents // events the pending pollers wait for; 0 when none waits
	observed  PollEvents // events returned to a poller and not cleared since
	delivered PollEvents // events the kernel reported since the last poll
	waker     Waker      // the pending poller, a *waiterSet for several, or nil
}

// waiterSet is a slot's waker while several distinct pollers wait on it.
type waiterSet struct{ wakers []Waker }

// Wake wakes every waiter of the set.
func (ws *waiterSet) Wake() {
	for _, w := range ws.wakers {
		w.Wake()
	}
}

func (s *interestSet) slot(slot InterestSlot) *interestSlot {
	checkSlot(slot)
	return &s.slots[slot]
}

// addWaiter adds w to the slot's waiters unless it is there already.
func (in *interestSlot) addWaiter(w Waker) {
	switch cur := in.waker.(type) {
	case nil:
		in.waker = w
	case *waiterSet:
		for _, x := range cur.wakers {
			if sameWaker(x, w) {
				return
			}
		}
		cur.wakers = append(cur.wakers, w)
	default:
		if !sameWaker(cur, w) {
			in.waker = &waiterSet{wakers: []Waker{cur, w}}
		}
	}
}

// takeWaiters moves the slot's waiters, except except, to wakers.
func (in *interestSlot) takeWaiters(wakers *WakerList, except Waker) {
	if ws, ok := in.waker.(*waiterSet); ok {
		for _, w := range ws.wakers {
			if !sameWaker(w, except) {
				wakers.Add(w)
			}
		}
	} else if !sameWaker(in.waker, except) {
		wakers.Add(in.waker)
	}
	in.waker = nil
}

// pollReady returns the ready events of slot among events, or records the
// request and the waker and reports pending. When it is ready, the other
// pollers waiting on the slot are added to wakers, for the caller to wake
// once it has released the op's lock.
func (s *interestSet) pollReady(cx *PollContext, slot InterestSlot, events PollEvents, wakers *WakerList) (PollEvents, bool) {
	in := s.slot(slot)
	events |= PollErr | PollHup
	if r := (in.observed | in.delivered) & events; r != 0 {
		in.requested = 0
		if in.waker != nil {
			in.takeWaiters(wakers, cx.waker)
		}
		in.delivered &^= r
		in.observed |= r
		return r, true
	}
	in.requested |= events
	switch {
	case cx.waker == nil:
	case in.waker == nil:
		// The one waiter, the common case: no call here, at the deepest
		// point of a task's wait (see TestRegressionTaskEchoFitsTheSmallestStack).
		in.waker = cx.waker
	case !sameWaker(in.waker, cx.waker):
		in.addWaiter(cx.waker)
	}
	return 0, false
}

// clearReady forgets the observed readiness of slot.
func (s *interestSet) clearReady(slot InterestSlot) { s.clearEvents(slot, pollEventsAll) }

// clearEvents forgets the observed events ev of slot. Hang-up and error
// edges come once: a caller that has not seen EAGAIN (or EOF) must keep
// them, or it would wait for an edge that never comes.
func (s *interestSet) clearEvents(slot InterestSlot, ev PollEvents) {
	in := s.slot(slot)
	in.observed &^= ev
}

// spendDataEdge forgets the observed PollIn of slot after a short read on
// a TCP stream, unless PollPri has ever been reported for the fd: urgent
// data, at whose mark a read stops short with data behind it. PollPri stays
// in delivered once reported (a Socket's reader never asks for it), so a
// socket that has seen urgent data reads until EAGAIN from then on.
func (s *interestSet) spendDataEdge(slot InterestSlot) {
	in := s.slot(slot)
	if (in.observed|in.delivered)&PollPri == 0 {
		in.observed &^= PollIn
	}
}

// wakeReady records events from the kernel and collects the wakers of the
// slots waiting for any of them.
func (s *interestSet) wakeReady(events PollEvents, wakers *WakerList) {
	for i := range s.slots {
		in := &s.slots[i]
		in.delivered |= events
		if in.requested&events != 0 {
			in.takeWaiters(wakers, nil)
			in.requested = 0
		}
	}
}
