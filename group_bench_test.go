//go:build linux

package iopool

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkGroupBalance opens 1000 connections to a group listener and
// holds them, per iteration, and reports how many the busiest pool holds
// against the average (busiest/avg; 1 is a perfect spread). "hash" is the
// kernel's SO_REUSEPORT hash of the addresses; "steer" places each
// connection on the pool of the CPU that processed its SYN, so its spread
// is the spread of the clients over CPUs: here one pinned dialer per CPU,
// each making an equal share of the connections, and one pool per CPU.
func BenchmarkGroupBalance(b *testing.B) {
	raiseNofile(b, 2000)
	for _, pools := range []int{2, 4, 8} {
		b.Run(fmt.Sprintf("hash/pools=%d", pools), func(b *testing.B) {
			benchBalance(b, GroupListenConfig{}, pools, 1000)
		})
	}
	b.Run(fmt.Sprintf("steer/pools=%d", len(processCPUs())), func(b *testing.B) {
		benchBalance(b, GroupListenConfig{SteerByCPU: true}, len(processCPUs()), 1000)
	})
}

func benchBalance(b *testing.B, cfg GroupListenConfig, pools, conns int) {
	g, err := NewGroup(pools, WithPinCPU())
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	gl, err := cfg.Listen(g, "tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	// held[i] counts the connections pool i holds; each pool's root keeps
	// the sockets it accepted until told to drop them.
	accepted := make(chan int, conns)
	drop := make([]*Chan[struct{}], pools)
	for i := range drop {
		drop[i] = NewChan[struct{}]()
	}
	runErr := make(chan error, 1)
	go func() {
		runErr <- g.Run(func(t *Task, i int) error {
			var held []*Socket
			dropAll := Spawn(t.Driver(), "drop", func(t *Task) (struct{}, error) {
				for {
					if _, err := drop[i].Recv(t); err != nil {
						return struct{}{}, err
					}
					for _, s := range held {
						s.Close()
					}
					held = held[:0]
				}
			})
			defer dropAll.Cancel()
			defer func() { // the last round's sockets, when the group closes
				for _, s := range held {
					s.Close()
				}
			}()
			for {
				s, err := gl.Accept(t)
				if err != nil {
					return err
				}
				held = append(held, s)
				accepted <- i
			}
		})
	}()
	worst := 0.0
	clients := make([]net.Conn, 0, conns)
	for range b.N {
		per := make([]int, pools)
		clients = dialFromEachCPU(b, gl.Addr(), conns, clients)
		for range conns {
			per[<-accepted]++
		}
		busiest := 0
		for _, n := range per {
			busiest = max(busiest, n)
		}
		worst = max(worst, float64(busiest)*float64(pools)/float64(conns))
		for _, c := range clients {
			c.Close()
		}
		clients = clients[:0]
		for _, d := range drop {
			d.Send(struct{}{})
		}
	}
	b.ReportMetric(worst, "busiest/avg")
	b.ReportMetric(0, "ns/op")
	g.Close()
	<-runErr
}

// dialFromEachCPU makes conns connections to addr, an equal share from a
// thread pinned to each CPU of the process, and appends them to clients.
func dialFromEachCPU(b *testing.B, addr net.Addr, conns int, clients []net.Conn) []net.Conn {
	cpus := processCPUs()
	var mu sync.Mutex
	var wg sync.WaitGroup
	var firstErr error
	for k, cpu := range cpus {
		share := conns/len(cpus) + btoi(k < conns%len(cpus))
		wg.Add(1)
		goLoop(true, func() { // off the main thread; the pinned thread exits with it
			defer wg.Done()
			var set unix.CPUSet
			set.Set(cpu)
			err := unix.SchedSetaffinity(0, &set)
			for range share {
				if err != nil {
					break
				}
				var c net.Conn
				// The SYN leaves from this thread: net.Dial connects on
				// the calling goroutine's thread, locked here.
				if c, err = net.Dial("tcp4", addr.String()); err == nil {
					mu.Lock()
					clients = append(clients, c)
					mu.Unlock()
				}
			}
			if err != nil {
				mu.Lock()
				firstErr = err
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	return clients
}

func btoi(v bool) int {
	if v {
		return 1
	}
	return 0
}

// BenchmarkGroupEcho serves 64-byte echoes from a group of pinned pools to
// closed-loop Go clients in the same process, and reports each pool's own
// loop-thread CPU per request it served (the worst pool: server-µs/req),
// all the pools' CPU over all the requests (group-µs/req), and requests
// per second, and the events each loop found per sleep. pools=1 is a
// single pinned pool (a one-pool group); conns=N/pools=2 gives each pool
// half the connections, conns=Nx2/pools=2 as many as the single pool has.
//
// On a 2-core machine the clients share the cores with the pools, so this
// measures the server's CPU per request under contention, not a throughput
// that scales: see docs/groups.md.
func BenchmarkGroupEcho(b *testing.B) {
	raiseNofile(b, 1200)
	for _, conns := range []int{64, 256} {
		b.Run(fmt.Sprintf("conns=%d/pools=1", conns), func(b *testing.B) { benchGroupEcho(b, 1, conns, 64) })
		b.Run(fmt.Sprintf("conns=%d/pools=2", conns), func(b *testing.B) { benchGroupEcho(b, 2, conns, 64) })
		// The same connections per pool as the single pool has.
		b.Run(fmt.Sprintf("conns=%dx2/pools=2", conns), func(b *testing.B) { benchGroupEcho(b, 2, 2*conns, 64) })
	}
}

// echoCounters are pool i's, touched only on pool i's thread.
type echoCounters struct{ bytes int64 }

func benchGroupEcho(b *testing.B, pools, conns, size int) {
	g, err := NewGroup(pools, WithPinCPU())
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	gl, err := g.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	counters := make([]echoCounters, pools)
	runErr := make(chan error, 1)
	go func() {
		runErr <- g.Run(func(t *Task, i int) error {
			for {
				s, err := gl.Accept(t)
				if err != nil {
					return err
				}
				Spawn(t.Driver(), "echo", func(t *Task) (struct{}, error) {
					defer s.Close()
					buf := make([]byte, 16<<10)
					for {
						n, err := s.Read(t, buf)
						if err != nil {
							return struct{}{}, nil
						}
						if _, err := s.Write(t, buf[:n]); err != nil {
							return struct{}{}, nil
						}
						counters[i].bytes += int64(n)
					}
				})
			}
		})
	}()
	// sample reads pool i's thread CPU and echoed bytes on its own thread.
	type sample struct {
		cpu, bytes int64
		st         Stats
	}
	snapshot := func() []sample {
		out := make([]sample, pools)
		for i := range pools {
			v, err := Spawn(g.Driver(i), "sample", func(t *Task) (sample, error) {
				var ru unix.Rusage
				_ = unix.Getrusage(unix.RUSAGE_THREAD, &ru)
				return sample{ru.Utime.Nano() + ru.Stime.Nano(), counters[i].bytes, g.Pool(i).Stats()}, nil
			}).Wait()
			if err != nil {
				b.Fatal(err)
			}
			out[i] = v
		}
		return out
	}

	clients := make([]net.Conn, conns)
	for i := range clients {
		if clients[i], err = net.Dial("tcp4", gl.Addr().String()); err != nil {
			b.Fatal(err)
		}
		defer clients[i].Close()
	}
	roundTrips := func(c net.Conn, n int) error {
		msg := bytes.Repeat([]byte{'x'}, size)
		got := make([]byte, size)
		for range n {
			if _, err := c.Write(msg); err != nil {
				return err
			}
			if _, err := io.ReadFull(c, got); err != nil {
				return err
			}
		}
		return nil
	}
	drive := func(each int) {
		var wg sync.WaitGroup
		errs := make(chan error, conns)
		for _, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := roundTrips(c, each); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
	}
	drive(2) // every connection accepted and warm
	before := snapshot()
	b.ResetTimer()
	drive(max(1, b.N/conns))
	b.StopTimer()
	after := snapshot()
	worst, total, cpu := 0.0, int64(0), int64(0)
	var events, sleeps uint64
	for i := range pools {
		events += after[i].st.Events - before[i].st.Events
		sleeps += after[i].st.Sleeps - before[i].st.Sleeps
		reqs := (after[i].bytes - before[i].bytes) / int64(size)
		total += reqs
		cpu += after[i].cpu - before[i].cpu
		if reqs > 0 {
			worst = max(worst, float64(after[i].cpu-before[i].cpu)/1e3/float64(reqs))
		}
	}
	b.ReportMetric(worst, "server-µs/req")
	if total > 0 {
		b.ReportMetric(float64(cpu)/1e3/float64(total), "group-µs/req")
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "req/s")
	if sleeps > 0 {
		// How much work each wake-up of a loop finds: fewer events per
		// sleep means more epoll_waits and wake-ups per request.
		b.ReportMetric(float64(events)/float64(sleeps), "events/sleep")
	}
	g.Close()
	<-runErr
}

// BenchmarkGroupPingPong runs, inside every pool of a pinned group at once,
// b.N round trips of 64 bytes between two tasks over a socketpair of that
// pool, and reports the worst pool's loop-thread CPU per round trip
// (server-ns/rt). Nothing outside the pools takes part, so a pool of a
// 2-pool group differs from a lone pinned pool (pools=1) only by what the
// pools share: locks, cache lines, the Go runtime, and the hardware (on
// this machine two vCPUs that may be hyperthreads of one core).
func BenchmarkGroupPingPong(b *testing.B) {
	for _, pools := range []int{1, 2} {
		b.Run(fmt.Sprintf("pools=%d", pools), func(b *testing.B) {
			g, err := NewGroup(pools, WithPinCPU())
			if err != nil {
				b.Fatal(err)
			}
			defer g.Close()
			cpu := make([]int64, pools)
			b.ResetTimer()
			err = g.Run(func(t *Task, i int) error {
				fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					return err
				}
				var socks [2]*Socket
				for k, fd := range fds {
					if socks[k], err = t.Driver().NewSocket(fd); err != nil {
						return err
					}
					defer socks[k].Close()
				}
				echo := Spawn(t.Driver(), "echo", func(t *Task) (struct{}, error) {
					buf := make([]byte, 64)
					for range b.N {
						if _, err := io.ReadFull(socks[1].Reader(t), buf); err != nil {
							return struct{}{}, err
						}
						if _, err := socks[1].Write(t, buf); err != nil {
							return struct{}{}, err
						}
					}
					return struct{}{}, nil
				})
				var ru0, ru1 unix.Rusage
				_ = unix.Getrusage(unix.RUSAGE_THREAD, &ru0)
				msg, got := make([]byte, 64), make([]byte, 64)
				for range b.N {
					if _, err := socks[0].Write(t, msg); err != nil {
						return err
					}
					if _, err := io.ReadFull(socks[0].Reader(t), got); err != nil {
						return err
					}
				}
				_ = unix.Getrusage(unix.RUSAGE_THREAD, &ru1)
				cpu[i] = ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()
				_, err = echo.Join(t)
				return err
			})
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			worst := int64(0)
			for _, c := range cpu {
				worst = max(worst, c)
			}
			b.ReportMetric(float64(worst)/float64(b.N), "server-ns/rt")
		})
	}
}
