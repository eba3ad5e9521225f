//go:build linux

package iopool

// timerEntry is one timer's place in the queue, embedded in its Timer.
//
//	unarmed (index == -1) --arm-->               armed (index >= 0)
//	armed                 --arm-->               armed, moved to the new deadline
//	armed                 --disarm/wakeExpired--> unarmed (the waker is taken on expiry)
type timerEntry struct {
	deadline int64  // pool clock ns; pool.mu
	seq      uint64 // when it was last armed: orders equal deadlines; pool.mu
	waker    Waker  // the poller to wake on expiry; pool.mu
	index    int    // position in the heap, -1 when unarmed; pool.mu
}

// timerQueue is a binary min-heap of the armed timers, ordered by deadline
// and, among equal deadlines, by the order in which they were armed (so
// that timers due at the same instant fire in that order, which a virtual
// clock makes common), with each entry's index kept in the entry so that
// arm (re-arm) and disarm are O(log n) without a search. Only armed timers
// are in it. Guarded by pool.mu.
type timerQueue struct {
	heap []*timerEntry
	seq  uint64 // arms so far
}

// len returns the number of armed timers.
func (q *timerQueue) len() int { return len(q.heap) }

func (q *timerQueue) less(i, j int) bool {
	a, b := q.heap[i], q.heap[j]
	return a.deadline < b.deadline || a.deadline == b.deadline && a.seq < b.seq
}

func (q *timerQueue) swap(i, j int) {
	q.heap[i], q.heap[j] = q.heap[j], q.heap[i]
	q.heap[i].index = i
	q.heap[j].index = j
}

func (q *timerQueue) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !q.less(i, p) {
			break
		}
		q.swap(i, p)
		i = p
	}
}

func (q *timerQueue) down(i int) {
	n := len(q.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && q.less(r, l) {
			m = r
		}
		if !q.less(m, i) {
			return
		}
		q.swap(i, m)
		i = m
	}
}

// arm inserts e with deadline, or moves it there if it is armed already;
// either way it counts as armed now, after every timer armed before it.
// Re-arming allocates nothing.
func (q *timerQueue) arm(e *timerEntry, deadline int64) {
	q.seq++
	e.deadline, e.seq = deadline, q.seq
	if e.index >= 0 {
		q.up(e.index)
		q.down(e.index)
		return
	}
	e.index = len(q.heap)
	q.heap = append(q.heap, e)
	q.up(e.index)
}

// disarm removes e if it is armed and reports whether it was.
func (q *timerQueue) disarm(e *timerEntry) bool {
	i := e.index
	if i < 0 {
		return false
	}
	last := len(q.heap) - 1
	if i != last {
		q.swap(i, last)
	}
	q.heap[last] = nil
	q.heap = q.heap[:last]
	if i != last {
		q.up(i)
		q.down(i)
	}
	e.index = -1
	return true
}

// nextDeadline returns the earliest deadline, false when no timer is armed.
func (q *timerQueue) nextDeadline() (int64, bool) {
	if len(q.heap) == 0 {
		return 0, false
	}
	return q.heap[0].deadline, true
}

// wakeExpired disarms every timer whose deadline is at or before now, moves
// their wakers into wakers, and returns how many expired.
func (q *timerQueue) wakeExpired(now int64, wakers *WakerList) int {
	n := 0
	for len(q.heap) > 0 && q.heap[0].deadline <= now {
		e := q.heap[0]
		q.disarm(e)
		if e.waker != nil {
			wakers.Add(e.waker)
			e.waker = nil
		}
		n++
	}
	return n
}
