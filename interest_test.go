package iopool

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPollEventsString(t *testing.T) {
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
	require.Equal(t, PollIn|PollRdHup, pollEventsFromEpoll(0x1|0x2000|0x80000000))
}

func TestInterestSetRules(t *testing.T) {
	w1, w2 := &counterWaker{}, &counterWaker{}
	cx1, cx2 := &Context{waker: w1}, &Context{waker: w2}

	t.Run("pending records request and waker", func(t *testing.T) {
		var s interestSet
		_, ok := s.pollReady(cx1, SlotRead, PollIn)
		require.False(t, ok)
		require.Equal(t, PollIn|PollErr|PollHup, s.slots[SlotRead].requested, "ERR|HUP are always added")
		require.Equal(t, Waker(w1), s.slots[SlotRead].waker)
	})
	t.Run("delivery wakes the slots whose request it meets", func(t *testing.T) {
		var s interestSet
		s.pollReady(cx1, SlotRead, PollIn)
		s.pollReady(cx2, SlotWrite, PollOut)
		var wl WakerList
		s.wakeReady(PollIn, &wl)
		require.Equal(t, 1, wl.Len(), "only the reader")
		require.Zero(t, s.slots[SlotRead].requested)
		require.Equal(t, PollIn, s.slots[SlotWrite].delivered, "delivered to every slot")
		ev, ok := s.pollReady(cx1, SlotRead, PollIn)
		require.True(t, ok)
		require.Equal(t, PollIn, ev)
		require.Equal(t, PollIn, s.slots[SlotRead].observed, "moved delivered → observed")
		require.Zero(t, s.slots[SlotRead].delivered)
	})
	t.Run("observed stays ready until cleared", func(t *testing.T) {
		var s interestSet
		var wl WakerList
		s.wakeReady(PollIn, &wl)
		_, ok := s.pollReady(cx1, SlotRead, PollIn)
		require.True(t, ok)
		_, ok = s.pollReady(cx1, SlotRead, PollIn)
		require.True(t, ok, "no ClearReady yet: still ready")
		s.clearReady(SlotRead)
		_, ok = s.pollReady(cx1, SlotRead, PollIn)
		require.False(t, ok, "after ClearReady, wait for a new edge")
	})
	t.Run("clearing the data edge keeps a hang-up seen with it", func(t *testing.T) {
		var s interestSet
		var wl WakerList
		s.wakeReady(PollIn|PollRdHup, &wl) // data, then the peer's shutdown, in one edge
		ev, ok := s.pollReady(cx1, SlotRead, PollIn|PollRdHup)
		require.True(t, ok)
		require.Equal(t, PollIn|PollRdHup, ev)
		s.clearEvents(SlotRead, PollIn) // a short read drained the data
		ev, ok = s.pollReady(cx1, SlotRead, PollIn|PollRdHup)
		require.True(t, ok, "the shutdown edge never repeats: still ready")
		require.Equal(t, PollRdHup, ev)
		s.clearEvents(SlotRead, PollIn)
		_, ok = s.pollReady(cx1, SlotRead, PollIn)
		require.False(t, ok, "a reader of PollIn alone waits for new data")
	})
	t.Run("hang-up is reported to any request", func(t *testing.T) {
		var s interestSet
		var wl WakerList
		s.pollReady(cx2, SlotWrite, PollOut)
		s.wakeReady(PollHup, &wl)
		require.Equal(t, 1, wl.Len())
		ev, ok := s.pollReady(cx2, SlotWrite, PollOut)
		require.True(t, ok)
		require.Equal(t, PollHup, ev)
	})
	t.Run("the waker is replaced only if different", func(t *testing.T) {
		var s interestSet
		s.pollReady(cx1, SlotRead, PollIn)
		s.pollReady(cx1, SlotRead, PollIn)
		require.Equal(t, Waker(w1), s.slots[SlotRead].waker)
		s.pollReady(cx2, SlotRead, PollIn)
		require.Equal(t, Waker(w2), s.slots[SlotRead].waker)
	})
	t.Run("events not asked for do not make a slot ready", func(t *testing.T) {
		var s interestSet
		var wl WakerList
		s.wakeReady(PollOut, &wl)
		_, ok := s.pollReady(cx1, SlotRead, PollIn)
		require.False(t, ok)
		require.Zero(t, wl.Len())
	})
	t.Run("invalid slot panics", func(t *testing.T) {
		var s interestSet
		require.PanicsWithValue(t, "iopool: invalid InterestSlot 2: use SlotRead or SlotWrite",
			func() { s.pollReady(cx1, slotCount, PollIn) })
	})
}

// FuzzInterestSet checks the interest set against a model kept in maps.
func FuzzInterestSet(f *testing.F) {
	f.Add([]byte{0, 1, 2, 1, 0, 1, 1, 0, 3, 0})
	f.Add([]byte{2, 0x10, 0, 4, 1, 0, 2, 5, 1, 1, 4, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		var s interestSet
		wakers := []*counterWaker{{}, {}}
		requested := map[InterestSlot]PollEvents{}
		observed := map[InterestSlot]PollEvents{}
		delivered := map[InterestSlot]PollEvents{}
		waker := map[InterestSlot]*counterWaker{}
		for len(data) >= 3 {
			op, slot, ev := data[0]%4, InterestSlot(data[1]%2), pollEventsFromEpoll(uint32(data[2])|uint32(data[2]&1)<<13)
			wi := int(data[1]>>1) % 2
			data = data[3:]
			switch op {
			case 0:
				got, ok := s.pollReady(&Context{waker: wakers[wi]}, slot, ev)
				want := (observed[slot] | delivered[slot]) & (ev | PollErr | PollHup)
				require.Equal(t, want != 0, ok)
				if ok {
					require.Equal(t, want, got)
					requested[slot] = 0
					waker[slot] = nil
					delivered[slot] &^= want
					observed[slot] |= want
				} else {
					requested[slot] = ev | PollErr | PollHup
					waker[slot] = wakers[wi]
				}
			case 1:
				s.clearReady(slot)
				requested[slot], observed[slot] = 0, 0
			case 3:
				s.clearEvents(slot, ev)
				requested[slot] = 0
				observed[slot] &^= ev
			case 2:
				var wl WakerList
				want := 0
				for sl := range slotCount {
					delivered[sl] |= ev
					if requested[sl]&ev != 0 {
						want++
						requested[sl] = 0
						waker[sl] = nil
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
				if waker[sl] == nil {
					require.Nil(t, in.waker)
				} else {
					require.Equal(t, Waker(waker[sl]), in.waker)
				}
			}
		}
	})
}
