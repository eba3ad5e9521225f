package iopool

// TEMPORARY minimal version; replaced by the full interest set.
type PollEvents uint32

const (
	PollIn    PollEvents = 0x001
	PollPri   PollEvents = 0x002
	PollOut   PollEvents = 0x004
	PollErr   PollEvents = 0x008
	PollHup   PollEvents = 0x010
	PollRdHup PollEvents = 0x2000
)

const pollEventsAll = PollIn | PollPri | PollOut | PollErr | PollHup | PollRdHup

func pollEventsFromEpoll(ev uint32) PollEvents { return PollEvents(ev) & pollEventsAll }

type InterestSlot uint8

const (
	SlotRead InterestSlot = iota
	SlotWrite
	slotCount
)

type interestSet struct{ slots [slotCount]interestSlot }

type interestSlot struct {
	requested, observed, delivered PollEvents
	waker                          Waker
}

func (s *interestSet) pollReady(cx *Context, slot InterestSlot, events PollEvents) (PollEvents, bool) {
	events |= PollErr | PollHup
	in := &s.slots[slot]
	if r := (in.observed | in.delivered) & events; r != 0 {
		in.requested = 0
		in.waker = nil
		in.delivered &^= r
		in.observed |= r
		return r, true
	}
	in.requested = events
	if in.waker != cx.waker {
		in.waker = cx.waker
	}
	return 0, false
}

func (s *interestSet) clearReady(slot InterestSlot) {
	s.slots[slot].requested = 0
	s.slots[slot].observed = 0
}

func (s *interestSet) wakeReady(events PollEvents, wakers *WakerList) {
	for i := range s.slots {
		in := &s.slots[i]
		in.delivered |= events
		if in.requested&events != 0 {
			wakers.Add(in.waker)
			in.waker = nil
			in.requested = 0
		}
	}
}
