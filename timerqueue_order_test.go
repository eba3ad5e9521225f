//go:build linux

package iopool

import (
	"cmp"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// orderWaker records, in a shared log, the order in which timers fire.
type orderWaker struct {
	id  int
	log *[]int
}

func (w *orderWaker) Wake() { *w.log = append(*w.log, w.id) }

// TestTimerQueueEqualDeadlinesFireInArmOrder: timers due at the same
// instant fire in the order they were last armed, a re-arm counting as a
// new arm.
func TestTimerQueueEqualDeadlinesFireInArmOrder(t *testing.T) {
	parallel(t)
	for _, tc := range []struct {
		name string
		arms []struct{ timer, deadline int }
		want []int
	}{
		{"same deadline", []struct{ timer, deadline int }{{0, 5}, {1, 5}, {2, 5}, {3, 5}, {4, 5}, {5, 5}, {6, 5}}, []int{0, 1, 2, 3, 4, 5, 6}},
		{"reverse arm order", []struct{ timer, deadline int }{{6, 5}, {5, 5}, {4, 5}, {3, 5}, {2, 5}, {1, 5}, {0, 5}}, []int{6, 5, 4, 3, 2, 1, 0}},
		{"re-arm moves to the back", []struct{ timer, deadline int }{{0, 5}, {1, 5}, {2, 5}, {0, 5}}, []int{1, 2, 0}},
		{"re-arm from later", []struct{ timer, deadline int }{{0, 5}, {1, 9}, {2, 5}, {1, 5}}, []int{0, 2, 1}},
		{"deadline first", []struct{ timer, deadline int }{{0, 7}, {1, 5}, {2, 7}, {3, 5}}, []int{1, 3, 0, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log []int
			var q timerQueue
			es := make([]timerEntry, 8)
			for i := range es {
				es[i] = timerEntry{index: -1, waker: &orderWaker{i, &log}}
			}
			for _, a := range tc.arms {
				q.arm(&es[a.timer], int64(a.deadline))
			}
			var wakers WakerList
			q.wakeExpired(100, &wakers)
			wakers.WakeAll()
			require.Equal(t, tc.want, log, "arms %v", tc.arms)
		})
	}
}

// FuzzTimerQueueFireOrder compares the order in which wakeExpired fires
// timers with a model: armed timers sorted by deadline, then by when they
// were last armed.
func FuzzTimerQueueFireOrder(f *testing.F) {
	f.Add([]byte{0, 1, 5, 0, 2, 5, 0, 3, 5, 0, 1, 5, 2, 9})
	f.Add([]byte{0, 0, 1, 0, 1, 1, 1, 0, 0, 0, 2, 1, 2, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		const n = 12
		var log []int
		var q timerQueue
		es := make([]timerEntry, n)
		for i := range es {
			es[i] = timerEntry{index: -1, waker: &orderWaker{i, &log}}
		}
		type armed struct {
			deadline int64
			when     int
		}
		model := map[int]armed{}
		for step := 0; len(data) >= 3; step++ {
			op, i, arg := data[0]%3, int(data[1])%n, int64(data[2]%16)
			data = data[3:]
			switch op {
			case 0:
				q.arm(&es[i], arg)
				model[i] = armed{arg, step}
			case 1:
				q.disarm(&es[i])
				delete(model, i)
			case 2:
				var want []int
				for j, a := range model {
					if a.deadline <= arg {
						want = append(want, j)
					}
				}
				slices.SortFunc(want, func(a, b int) int {
					return cmp.Or(cmp.Compare(model[a].deadline, model[b].deadline), cmp.Compare(model[a].when, model[b].when))
				})
				for _, j := range want {
					delete(model, j)
					es[j].waker = &orderWaker{j, &log}
				}
				log = log[:0]
				var wakers WakerList
				q.wakeExpired(arg, &wakers)
				wakers.WakeAll()
				if len(want) == 0 {
					want = []int{}
				}
				require.Equal(t, want, append([]int{}, log...))
			}
			require.NoError(t, q.verify())
		}
	})
}
