//go:build linux

package iopool

import (
	"errors"
	"fmt"
	"sync"
)

// Group is a thread-per-core set of pools: n independent pools, each driven
// by its own goroutine (its own OS thread with WithLockOSThread, and its own
// CPU with WithPinCPU), that share nothing on their hot paths. A server
// gives each pool its own connections, usually through Group.Listen, so the
// tasks of one connection never meet a lock held by another core.
//
// Pools talk to each other the way any goroutine talks to a pool: spawn a
// task onto another pool with Spawn(g.Driver(j), ...) from a task of pool i,
// and carry the answer back with a Oneshot (or a Chan) that the task of
// pool i awaits. The Driver is safe from any goroutine; the spawned task
// runs on pool j's thread, one at a time with pool j's other tasks.
//
// A Group is safe to use from any goroutine. Close it when done.
type Group struct {
	pools []*Pool
	cpus  []int         // the CPU pool i is pinned to, or -1; fixed by NewGroup
	index map[*Pool]int // the index of each pool; read-only after NewGroup
}

// NewGroup creates n pools with the given options. n ≤ 0 means one pool per
// CPU the process may run on (sched_getaffinity of the process). Every pool
// is made with the PoolGroupOptions among opts and is named after its index:
// "pool-i", or "name-i" with WithName(name); with WithPinCPU, pool i is also
// pinned to the i-th of those CPUs (as WithCPU would do), wrapping around
// when n exceeds them. If a pool cannot be created (an option's bad input
// included), the ones already made are closed and the error names the pool.
func NewGroup(n int, opts ...GroupOption) (*Group, error) {
	var gopts groupOptions
	for _, o := range opts {
		if o == nil {
			return nil, errors.New("iopool: NewGroup: nil GroupOption")
		}
		if err := o.applyToGroup(&gopts); err != nil {
			return nil, err
		}
	}
	cpus := processCPUs()
	if n <= 0 {
		n = len(cpus)
	}
	g := &Group{pools: make([]*Pool, 0, n), cpus: make([]int, n), index: make(map[*Pool]int, n)}
	name := gopts.name
	if name == "" {
		name = "pool"
	}
	for i := range n {
		// Each pool is named after its index ("pool-0", or "srv-0" with
		// WithName("srv")): the pprof label "pool" and the logs tell them
		// apart.
		popts := append(gopts.eachPool[:len(gopts.eachPool):len(gopts.eachPool)], WithName(fmt.Sprintf("%s-%d", name, i)))
		g.cpus[i] = -1
		if gopts.pinEach {
			g.cpus[i] = cpus[i%len(cpus)]
			popts = append(popts, WithCPU(g.cpus[i]))
		}
		p, err := New(popts...)
		if err != nil {
			g.Close()
			return nil, wrapError(err, "NewGroup: pool %d", i)
		}
		g.pools = append(g.pools, p)
		g.index[p] = i
	}
	return g, nil
}

// Len returns the number of pools.
func (g *Group) Len() int { return len(g.pools) }

// Pool returns pool i (0 ≤ i < Len; other indexes panic).
func (g *Group) Pool(i int) *Pool { return g.pools[g.checkIndex("Pool", i)] }

// Driver returns pool i's driver.
func (g *Group) Driver(i int) *Driver { return g.pools[g.checkIndex("Driver", i)].Driver() }

// CPU returns the CPU pool i's loop thread is pinned to, or -1 when the
// group was made without WithPinCPU.
func (g *Group) CPU(i int) int { return g.cpus[g.checkIndex("CPU", i)] }

// checkIndex turns an index out of range into a panic that says so.
func (g *Group) checkIndex(method string, i int) int {
	if i < 0 || i >= len(g.pools) {
		panic(fmt.Sprintf("iopool: Group.%s(%d): the group has pools 0..%d", method, i, len(g.pools)-1))
	}
	return i
}

// Index returns p's index in the group, or -1 if p is not one of its pools.
func (g *Group) Index(p *Pool) int {
	if i, ok := g.index[p]; ok {
		return i
	}
	return -1
}

// Run runs root once on every pool, concurrently, as that pool's root task
// (see Pool.Run), passing the pool's index, and returns when every root has
// returned. It returns the first error a root returned, in time, wrapped
// with its pool's index (errors.Is sees through it); a pool closed while its
// root runs contributes ErrClosed. A panic in a root is re-raised by Run, in
// the caller's goroutine, once all the roots have returned.
//
// A pool runs its tasks only while its root runs (see Pool.Run): a root
// that returns leaves its pool idle, and tasks spawned onto it wait for the
// next Run. A root that returns early does not stop the others; to stop
// them all, close the group or signal the roots (a Oneshot, a context).
func (g *Group) Run(root func(t *Task, pool int) error) error {
	if root == nil {
		return ErrNilTask
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		first    error
		panicked any
	)
	for i, p := range g.pools {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if r := recover(); r != nil {
					mu.Lock()
					if panicked == nil {
						panicked = r
					}
					mu.Unlock()
				}
			}()
			err := p.Run(func(t *Task) error { return root(t, i) })
			if err != nil {
				mu.Lock()
				if first == nil {
					first = wrapError(err, "group pool %d", i)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if panicked != nil {
		panic(panicked)
	}
	return first
}

// Start starts every pool (see Pool.Start): each runs its loop on its own
// goroutine (its own thread with WithLockOSThread, its own CPU with
// WithPinCPU) until Close, for goroutine code and tasks spawned with
// Spawn(g.Driver(i), ...). It returns the first error, naming the pool;
// the pools started before it keep running until Close.
func (g *Group) Start() error {
	for i, p := range g.pools {
		if err := p.Start(); err != nil {
			return fmt.Errorf("pool %d: %w", i, err)
		}
	}
	return nil
}

// Close closes every pool (see Pool.Close), all at once, and returns the
// first error in pool order, wrapped with the pool's index. The listeners
// of Group.Listen close with their pools. A second Close is a no-op.
func (g *Group) Close() error {
	errs := make([]error, len(g.pools))
	var wg sync.WaitGroup
	for i, p := range g.pools {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p.Close()
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return wrapError(err, "group pool %d", i)
		}
	}
	return nil
}

// GroupStats holds every pool's counters and their sum.
type GroupStats struct {
	Pools []Stats // Pools[i] is pool i's snapshot
	Total Stats   // the sum over the pools
}

// Stats returns a snapshot of each pool's counters and their sum. The
// pools are read one after another, not atomically as a whole.
func (g *Group) Stats() GroupStats {
	gs := GroupStats{Pools: make([]Stats, len(g.pools))}
	for i, p := range g.pools {
		gs.Pools[i] = p.Stats()
		gs.Total = gs.Total.add(gs.Pools[i])
	}
	return gs
}

// add returns the field-by-field sum of s and o.
func (s Stats) add(o Stats) Stats {
	return Stats{
		Cycles: s.Cycles + o.Cycles, Sleeps: s.Sleeps + o.Sleeps, EventfdWrites: s.EventfdWrites + o.EventfdWrites,
		Wakes: s.Wakes + o.Wakes, TimersFired: s.TimersFired + o.TimersFired, TasksSpawned: s.TasksSpawned + o.TasksSpawned,
		TasksLive: s.TasksLive + o.TasksLive, FdsRegistered: s.FdsRegistered + o.FdsRegistered,
		FdsGoPolled: s.FdsGoPolled + o.FdsGoPolled, Events: s.Events + o.Events,
		UringEnters: s.UringEnters + o.UringEnters, UringSubmitted: s.UringSubmitted + o.UringSubmitted,
		UringCompleted: s.UringCompleted + o.UringCompleted,
	}
}
