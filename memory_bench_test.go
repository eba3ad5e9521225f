//go:build linux

package iopool

import (
	"iter"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// idleConns is 10k connections (socketpairs, 2 fds each) or as many as the
// fd limit allows; the per-connection figure does not depend on it.
var idleConns = 10_000

// raiseNofile lifts RLIMIT_NOFILE to its hard limit and skips the benchmark
// if that is too low for n fds.
func raiseNofile(b *testing.B, n int) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		b.Skip("getrlimit:", err)
	}
	want := uint64(n) + 1024
	if rl.Max < want {
		// Raising the hard limit needs CAP_SYS_RESOURCE; try, then settle
		// for what is allowed.
		raised := unix.Rlimit{Cur: want, Max: want}
		if unix.Setrlimit(unix.RLIMIT_NOFILE, &raised) == nil {
			rl = raised
		}
	}
	rl.Cur = rl.Max
	_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &rl)
	if fit := (int(rl.Cur) - 1024) / 2; fit < idleConns {
		idleConns = fit
	}
	if idleConns < 1000 {
		b.Skipf("RLIMIT_NOFILE hard limit %d leaves room for only %d connections", rl.Max, idleConns)
	}
	b.Logf("%d idle connections", idleConns)
}

// warmGoroutines makes sure that n dead goroutines wait in the runtime's
// free list. The runtime never frees a goroutine's descriptor (its g, about
// 460 bytes): a new goroutine reuses a dead one's, or allocates one on the
// heap. Without this, whichever case runs first pays n descriptors and the
// later ones reuse them; with it, no case pays them (each still pays its
// goroutines' stacks, which the GC in heapAndStacks frees for dead ones).
func warmGoroutines(n int) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
		}()
	}
	close(start)
	wg.Wait()
}

// heapAndStacks returns the live heap plus goroutine stacks after a GC.
func heapAndStacks() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc + ms.StackInuse
}

func idlePairs(b *testing.B) [][2]int {
	pairs := make([][2]int, idleConns)
	for i := range pairs {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		pairs[i] = fds
	}
	return pairs
}

func closePairs(pairs [][2]int) {
	for _, p := range pairs {
		unix.Close(p[0])
		unix.Close(p[1])
	}
}

// BenchmarkIdleConnMemory reports the memory one idle connection costs:
// registered with NewFdReady (poll layer), served by a task blocked in
// Socket.Read (task layer), served by a LeanServer whose handler has
// returned (lean: no task while idle), and served by a goroutine blocked in
// a net.Conn Read (Go's goroutine-per-connection model), all in one run;
// and, as a
// floor for the task layer, a bare iter.Pull coroutine suspended at its
// first yield. Every case reuses goroutine descriptors (warmGoroutines).
func BenchmarkIdleConnMemory(b *testing.B) {
	raiseNofile(b, 2*idleConns)
	warmGoroutines(idleConns + 1000)
	n := float64(idleConns)
	b.Run("iter.Pull", func(b *testing.B) {
		for range b.N {
			stops := make([]func(), 0, idleConns)
			before := heapAndStacks()
			for range idleConns {
				next, stop := iter.Pull(func(yield func(struct{}) bool) { yield(struct{}{}) })
				next()
				stops = append(stops, stop)
			}
			after := heapAndStacks()
			b.ReportMetric(float64(after-before)/n, "B/conn")
			for _, stop := range stops {
				stop()
			}
		}
	})
	b.Run("poll-layer", func(b *testing.B) {
		for range b.N {
			pairs := idlePairs(b)
			p, _ := New()
			before := heapAndStacks()
			frs := make([]*FdReady, 0, idleConns)
			for _, fds := range pairs {
				fr, err := p.Driver().NewFdReady(fds[0])
				if err != nil {
					b.Fatal(err)
				}
				frs = append(frs, fr)
			}
			after := heapAndStacks()
			b.ReportMetric(float64(after-before)/n, "B/conn")
			for _, fr := range frs {
				fr.Close()
			}
			p.Close()
			closePairs(pairs)
		}
	})
	b.Run("task-layer", func(b *testing.B) {
		for range b.N {
			pairs := idlePairs(b)
			p, _ := New()
			var after uint64
			before := heapAndStacks()
			err := p.Run(func(t *Task) error {
				for _, fds := range pairs {
					s, err := t.Driver().NewSocket(fds[0])
					if err != nil {
						return err
					}
					Spawn(t.Driver(), "idle", func(t *Task) (int, error) {
						defer s.Close()
						var buf [1]byte
						return s.Read(t, buf[:])
					})
				}
				if err := t.Yield(); err != nil { // let every task block in Read
					return err
				}
				after = heapAndStacks()
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(after-before)/n, "B/conn")
			p.Close()
			for _, fds := range pairs {
				unix.Close(fds[1])
			}
		}
	})
	b.Run("lean", func(b *testing.B) {
		for range b.N {
			pairs := idlePairs(b)
			p, _ := New()
			var after uint64
			before := heapAndStacks()
			err := p.Run(func(t *Task) error {
				srv := &LeanServer{}
				defer srv.Close()
				for _, fds := range pairs {
					s, err := t.Driver().NewSocket(fds[0])
					if err != nil {
						return err
					}
					if err := srv.Add(s, &leanEchoConn{}); err != nil {
						return err
					}
				}
				for !srv.settled() { // every handler ran once and returned
					if err := t.Yield(); err != nil {
						return err
					}
				}
				after = heapAndStacks()
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(after-before)/n, "B/conn")
			p.Close()
			for _, fds := range pairs {
				unix.Close(fds[1])
			}
		}
	})
	b.Run("go-net", func(b *testing.B) {
		for range b.N {
			pairs := idlePairs(b)
			before := heapAndStacks()
			conns := make([]net.Conn, 0, idleConns)
			for _, fds := range pairs {
				f := os.NewFile(uintptr(fds[0]), "pair")
				c, err := net.FileConn(f)
				f.Close()
				if err != nil {
					b.Fatal(err)
				}
				conns = append(conns, c)
				go func() {
					var buf [1]byte
					c.Read(buf[:])
				}()
			}
			runtime.Gosched()
			after := heapAndStacks()
			b.ReportMetric(float64(after-before)/n, "B/conn")
			for _, c := range conns {
				c.Close()
			}
			for _, fds := range pairs {
				unix.Close(fds[1])
			}
		}
	})
}
