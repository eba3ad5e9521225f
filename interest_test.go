//go:build linux

package iopool

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPollEventsString(t *testing.T) {
	parallel(t)
	for ev, want := range map[PollEvents]string{
		0:                            "0",
		PollIn:                       "IN",
		PollIn | PollOut | PollRdHup: "IN|OUT|RDHUP",
		PollErr | PollHup:            "ERR|HUP",
		PollPri | 0x40000:            "PRI|0x40000",
	} {
		require.Equal(t, want, ev.String(), "%#x", uint32(ev))
	}
	require.Equal(t, "read", SlotRead.String())
	require.Equal(t, "write", SlotWrite.String())
	require.Equal(t, "InterestSlot(7)", InterestSlot(7).String())
}

func TestInterestSetRules(t *testing.T) {
	parallel(t)
	w1, w2 := &counterWaker{}, &counterWaker{}
	cx1, cx2 := &PollContext{waker: w1}, &PollContext{waker: w2}

	t.Run("pending records request and waker", func(t *testing.T) {
		var s interestSet
		_, ok := s.poll(cx1, SlotRead, PollIn)
		require.False(t, ok)
		require.Equal(t, PollIn|PollErr|PollHup, s.slots[SlotRead].requested, "ERR|HUP are always added")
		require.Equal(t, Waker(w1), s.slots[SlotRead].waker)
	})
	t.Run("delivery wakes the slots whose request it meets", func(t *testing.T) {
		var s interestSet
		s.poll(cx1, SlotRead, PollIn)
		s.poll(cx2, SlotWrite, PollOut)
		var wl WakerList
		s.wakeReady(PollIn, &wl)
		require.Equal(t, 1, wl.Len(), "only the reader")
		require.Zero(t, s.slots[SlotRead].requested)
		require.Equal(t, PollIn, s.slots[SlotWrite].delivered, "delivered to every slot")
		ev, ok := s.poll(cx1, SlotRead, PollIn)
		require.True(t, ok)
		require.Equal(t, PollIn, ev)
		require.Equal(t, PollIn, s.slots[SlotRead].observed, "moved delivered → observed")
		require.Zero(t, s.slots[SlotRead].delivered)
	})
	t.Run("observed stays ready until cleared", func(t *testing.T) {
		var s interestSet
		var wl WakerList
		s.wakeReady(PollIn, &wl)
		_, ok := s.poll(cx1, SlotRead, PollIn)
		require.True(t, ok)
		_, ok = s.poll(cx1, SlotRead, PollIn)
		require.True(t, ok, "no ClearReady yet: still ready")
		s.clearReady(SlotRead)
		_, ok = s.poll(cx1, SlotRead, PollIn)
		require.False(t, ok, "after ClearReady, wait for a new edge")
	})
	t.Run("clearing the data edge keeps a hang-up seen with it", func(t *testing.T) {
		var s interestSet
		var wl WakerList
		s.wakeReady(PollIn|PollRdHup, &wl) // data, then the peer's shutdown, in one edge
		ev, ok := s.poll(cx1, SlotRead, PollIn|PollRdHup)
		require.True(t, ok)
		require.Equal(t, PollIn|PollRdHup, ev)
		s.clearEvents(SlotRead, PollIn) // a short read drained the data
		ev, ok = s.poll(cx1, SlotRead, PollIn|PollRdHup)
		require.True(t, ok, "the shutdown edge never repeats: still ready")
		require.Equal(t, PollRdHup, ev)
		s.clearEvents(SlotRead, PollIn)
		_, ok = s.poll(cx1, SlotRead, PollIn)
		require.False(t, ok, "a reader of PollIn alone waits for new data")
	})
	t.Run("hang-up is reported to any request", func(t *testing.T) {
		var s interestSet
		var wl WakerList
		s.poll(cx2, SlotWrite, PollOut)
		s.wakeReady(PollHup, &wl)
		require.Equal(t, 1, wl.Len())
		ev, ok := s.poll(cx2, SlotWrite, PollOut)
		require.True(t, ok)
		require.Equal(t, PollHup, ev)
	})
	t.Run("several pollers wait together and are all woken", func(t *testing.T) {
		var s interestSet
		s.poll(cx1, SlotRead, PollIn)
		s.poll(cx1, SlotRead, PollIn)
		require.Equal(t, Waker(w1), s.slots[SlotRead].waker, "a poller is kept once")
		s.poll(cx2, SlotRead, PollPri)
		require.Equal(t, PollIn|PollPri|PollErr|PollHup, s.slots[SlotRead].requested, "the union of the requests")
		s.clearReady(SlotRead) // another poller's EAGAIN: the waiters stay
		var wl WakerList
		s.wakeReady(PollIn, &wl)
		require.Equal(t, 2, wl.Len(), "both waiters")
		require.Nil(t, s.slots[SlotRead].waker)
	})
	t.Run("a poller that finds the slot ready wakes the other waiters", func(t *testing.T) {
		var s interestSet
		s.poll(cx1, SlotRead, PollIn)
		var wl WakerList
		s.wakeReady(PollOut, &wl) // not what the reader waits for
		s.slots[SlotRead].observed = PollIn
		_, ok := s.pollReady(cx2, SlotRead, PollIn, &wl)
		require.True(t, ok)
		require.Equal(t, 1, wl.Len())
		require.Nil(t, s.slots[SlotRead].waker)
	})
	t.Run("a nil waker is not kept", func(t *testing.T) {
		var s interestSet
		s.poll(&PollContext{}, SlotRead, PollIn)
		require.Nil(t, s.slots[SlotRead].waker)
	})
	t.Run("events not asked for do not make a slot ready", func(t *testing.T) {
		var s interestSet
		var wl WakerList
		s.wakeReady(PollOut, &wl)
		_, ok := s.poll(cx1, SlotRead, PollIn)
		require.False(t, ok)
		require.Zero(t, wl.Len())
	})
	t.Run("invalid slot panics", func(t *testing.T) {
		var s interestSet
		require.PanicsWithValue(t, "iopool: invalid InterestSlot 2: use SlotRead or SlotWrite",
			func() { s.poll(cx1, slotCount, PollIn) })
	})
}

// FuzzInterestSet checks the interest set against a model kept in maps.
func FuzzInterestSet(f *testing.F) {
	f.Add([]byte{0, 1, 2, 1, 0, 1, 1, 0, 3, 0})
	f.Add([]byte{2, 0x10, 0, 4, 1, 0, 2, 5, 1, 1, 4, 3})
	f.Add([]byte{0, 0, 1, 0, 2, 1, 3, 0, 1, 2, 0, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		var s interestSet
		wakers := []*counterWaker{{}, {}, nil}
		requested := map[InterestSlot]PollEvents{}
		observed := map[InterestSlot]PollEvents{}
		delivered := map[InterestSlot]PollEvents{}
		waiting := map[InterestSlot]map[Waker]bool{}
		for len(data) >= 3 {
			op, slot, ev := data[0]%4, InterestSlot(data[1]%2), pollEventsFromEpoll(uint32(data[2])|uint32(data[2]&1)<<13)
			wi := int(data[1]>>1) % 3
			data = data[3:]
			var w Waker
			if wakers[wi] != nil {
				w = wakers[wi]
			}
			switch op {
			case 0:
				var wl WakerList
				got, ok := s.pollReady(&PollContext{waker: w}, slot, ev, &wl)
				want := (observed[slot] | delivered[slot]) & (ev | PollErr | PollHup)
				require.Equal(t, want != 0, ok)
				if ok {
					require.Equal(t, want, got)
					others := 0
					for x := range waiting[slot] {
						if x != w {
							others++
						}
					}
					require.Equal(t, others, wl.Len(), "the other waiters are woken")
					requested[slot] = 0
					waiting[slot] = nil
					delivered[slot] &^= want
					observed[slot] |= want
				} else {
					require.Zero(t, wl.Len())
					requested[slot] |= ev | PollErr | PollHup
					if w != nil {
						if waiting[slot] == nil {
							waiting[slot] = map[Waker]bool{}
						}
						waiting[slot][w] = true
					}
				}
			case 1:
				s.clearReady(slot)
				observed[slot] = 0
			case 3:
				s.clearEvents(slot, ev)
				observed[slot] &^= ev
			case 2:
				var wl WakerList
				want := 0
				for sl := range slotCount {
					delivered[sl] |= ev
					if requested[sl]&ev != 0 {
						want += len(waiting[sl])
						requested[sl] = 0
						waiting[sl] = nil
					}
				}
				s.wakeReady(ev, &wl)
				require.Equal(t, want, wl.Len())
			}
			for sl := range slotCount {
				in := s.slots[sl]
				require.Equal(t, requested[sl], in.requested, "slot %v requested", sl)
				require.Equal(t, observed[sl], in.observed, "slot %v observed", sl)
				require.Equal(t, delivered[sl], in.delivered, "slot %v delivered", sl)
				got := map[Waker]bool{}
				switch x := in.waker.(type) {
				case nil:
				case *waiterSet:
					require.Greater(t, len(x.wakers), 1)
					for _, y := range x.wakers {
						require.False(t, got[y], "a waiter kept twice")
						got[y] = true
					}
				default:
					got[x] = true
				}
				if len(waiting[sl]) == 0 {
					require.Empty(t, got, "slot %v waiters", sl)
				} else {
					require.Equal(t, waiting[sl], got, "slot %v waiters", sl)
				}
			}
		}
	})
}

// poll is pollReady for a test that does not look at the other waiters.
func (s *interestSet) poll(cx *PollContext, slot InterestSlot, events PollEvents) (PollEvents, bool) {
	var wl WakerList
	return s.pollReady(cx, slot, events, &wl)
}
