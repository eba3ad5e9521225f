package iopool

// TEMPORARY minimal version; replaced by the full heap.
type timerEntry struct {
	deadline int64
	waker    Waker
	index    int
}

func newTimerEntry() *timerEntry { return &timerEntry{index: -1} }

type timerQueue struct{ heap []*timerEntry }

func (q *timerQueue) len() int { return len(q.heap) }

func (q *timerQueue) less(i, j int) bool { return q.heap[i].deadline < q.heap[j].deadline }

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

func (q *timerQueue) arm(e *timerEntry, deadline int64) {
	e.deadline = deadline
	if e.index >= 0 {
		q.up(e.index)
		q.down(e.index)
		return
	}
	e.index = len(q.heap)
	q.heap = append(q.heap, e)
	q.up(e.index)
}

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

func (q *timerQueue) nextDeadline() (int64, bool) {
	if len(q.heap) == 0 {
		return 0, false
	}
	return q.heap[0].deadline, true
}

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
