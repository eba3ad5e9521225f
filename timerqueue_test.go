//go:build linux

package iopool

import (
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTimerQueueOrderAndRearm(t *testing.T) {
	parallel(t)
	var q timerQueue
	es := make([]timerEntry, 6)
	for i, d := range []int64{50, 10, 40, 20, 60, 30} {
		es[i].index = -1
		q.arm(&es[i], d)
		require.NoError(t, q.verify())
	}
	d, ok := q.nextDeadline()
	require.True(t, ok)
	require.EqualValues(t, 10, d)

	q.arm(&es[4], 5) // re-arm earlier: 60 → 5
	d, _ = q.nextDeadline()
	require.EqualValues(t, 5, d)
	q.arm(&es[4], 100) // and later again
	require.NoError(t, q.verify())
	require.Equal(t, 6, q.len())

	require.True(t, q.disarm(&es[1])) // remove 10
	require.False(t, q.disarm(&es[1]), "disarming twice")
	require.NoError(t, q.verify())

	w := &counterWaker{}
	es[3].waker = w // 20
	es[5].waker = w // 30
	var wakers WakerList
	require.Equal(t, 2, q.wakeExpired(30, &wakers))
	require.Equal(t, 2, wakers.Len())
	require.Nil(t, es[3].waker, "the waker is taken")
	require.Equal(t, -1, es[3].index)
	d, _ = q.nextDeadline()
	require.EqualValues(t, 40, d)
	require.Equal(t, 0, q.wakeExpired(39, &wakers))
	require.Equal(t, 3, q.wakeExpired(1000, &wakers))
	_, ok = q.nextDeadline()
	require.False(t, ok)
}

// FuzzTimerQueue compares the heap with a sorted-slice model over arm,
// re-arm, disarm and wakeExpired sequences taken from the fuzz input. The
// committed corpus (testdata/fuzz/FuzzTimerQueue) reaches every branch of
// the heap's ordering code, and its named entries fail, without -fuzz,
// mutants that the other seeds missed: down picking the larger child, down
// ignoring the last right child, disarm without up, re-arm without down.
func FuzzTimerQueue(f *testing.F) {
	f.Add([]byte{0, 1, 10, 0, 2, 5, 1, 1, 0, 3, 0, 7, 3, 0, 20})
	f.Add([]byte{0, 0, 1, 0, 0, 1, 0, 1, 1, 3, 0, 1, 2, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		const n = 16
		var q timerQueue
		es := make([]timerEntry, n)
		for i := range es {
			es[i].index = -1
		}
		model := map[int]int64{} // entry → deadline, armed entries only
		for len(data) >= 3 {
			op, i, arg := data[0]%4, int(data[1])%n, int64(data[2])
			data = data[3:]
			switch op {
			case 0, 1:
				q.arm(&es[i], arg)
				model[i] = arg
			case 2:
				_, armed := model[i]
				require.Equal(t, armed, q.disarm(&es[i]))
				delete(model, i)
			case 3:
				var wakers WakerList
				want := 0
				for j, d := range model {
					if d <= arg {
						want++
						delete(model, j)
						require.True(t, es[j].index >= 0)
					}
				}
				require.Equal(t, want, q.wakeExpired(arg, &wakers))
			}
			require.NoError(t, q.verify())
			require.Equal(t, len(model), q.len())
			ds := make([]int64, 0, len(model))
			for j, d := range model {
				ds = append(ds, d)
				require.Equal(t, d, es[j].deadline)
			}
			slices.Sort(ds)
			d, ok := q.nextDeadline()
			require.Equal(t, len(ds) > 0, ok)
			if ok {
				require.Equal(t, ds[0], d)
			}
		}
	})
}

func BenchmarkTimerQueueArmDisarm(b *testing.B) {
	b.ReportAllocs()
	var q timerQueue
	es := make([]timerEntry, 1024)
	for i := range es {
		es[i].index = -1
		q.arm(&es[i], int64(i*7919%1024))
	}
	b.ResetTimer()
	for i := range b.N {
		e := &es[i&1023]
		q.arm(e, int64(i*31%4096))
		if i&1 == 1 {
			q.disarm(e)
		}
	}
}

// verify checks the heap order and every index back-pointer; for tests.
func (q *timerQueue) verify() error {
	for i, e := range q.heap {
		if e.index != i {
			return fmt.Errorf("entry at %d has index %d", i, e.index)
		}
		if i > 0 && q.less(i, (i-1)/2) {
			parent := q.heap[(i-1)/2]
			return fmt.Errorf("entry at %d (deadline %d, seq %d) is before its parent (deadline %d, seq %d)", i, e.deadline, e.seq, parent.deadline, parent.seq)
		}
	}
	return nil
}
