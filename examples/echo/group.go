//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/iopool/iopool"
)

// poolCounters is what one pool of the group did while serving. Only that
// pool's tasks write it; it is read after the group's Run has returned.
type poolCounters struct {
	conns   int   // connections accepted
	peers   []int // their remote ports, to match them with the CPU that dialed each
	bytes   int64 // bytes echoed
	cpuNano int64 // the pool's loop thread CPU while serving
	bufs    bufferList
}

// runGroup serves with a thread-per-core iopool.Group of c.pools pools, one
// SO_REUSEPORT listener each (Group.Listen), optionally pinned to CPUs and
// steered by the receiving CPU, and prints a table of connections and
// requests per pool.
func runGroup(ctx context.Context, c config, addr string, out io.Writer) error {
	var opt iopool.GroupOption = iopool.WithLockOSThread()
	if c.pin {
		opt = iopool.WithPinCPU()
	}
	g, err := iopool.NewGroup(c.pools, opt)
	if err != nil {
		return err
	}
	defer g.Close()
	gl, err := iopool.GroupListenConfig{SteerByCPU: c.steer}.Listen(g, "tcp", addr)
	if err != nil {
		return err
	}
	counters := make([]poolCounters, g.Len())
	stops := make([]*iopool.Oneshot[struct{}], g.Len())
	for i := range stops {
		stops[i] = iopool.NewOneshot[struct{}]()
	}
	runErr := make(chan error, 1)
	go func() {
		runErr <- g.Run(func(t *iopool.Task, pool int) error {
			return servePool(t, gl, stops[pool], &counters[pool])
		})
	}()
	mode := "kernel hash"
	if c.steer {
		mode = "steered to the receiving CPU"
	}
	fmt.Fprintf(out, "echo server on %s: a group of %d pools (%s), one SO_REUSEPORT listener each, %s\n",
		gl.Addr(), g.Len(), map[bool]string{true: "pinned, one CPU each", false: "one locked OS thread each"}[c.pin], mode)
	stop := func() error {
		for _, s := range stops {
			_ = s.Send(struct{}{})
		}
		return <-runErr
	}
	if c.listen != "" {
		<-ctx.Done()
		err := stop()
		printStopped(out, ctx, gl.Addr().String())
		return err
	}
	if c.pin {
		// Dial from each pool's CPU in turn, so that steering has
		// connections arriving on every CPU to place.
		for i := range g.Len() {
			c.dialCPUs = append(c.dialCPUs, g.CPU(i))
		}
	}
	res, derr := drive(ctx, gl.Addr().String(), c, out)
	if err := stop(); err != nil {
		return err
	}
	if derr != nil {
		return derr
	}
	var cpu int64
	stats := g.Stats()
	for _, pc := range counters {
		cpu += pc.cpuNano
	}
	printReport(out, c, res, cpu, stats.Pools)
	printPoolTable(out, g, c, counters, stats)
	if res.dialCPU != nil {
		printPlacement(out, g, c, counters, res.dialCPU)
	}
	return nil
}

// servePool is pool i's root: it accepts from the pool's own listener and
// echoes each connection in a task of its own until stop fires.
func servePool(t *iopool.Task, gl *iopool.GroupListener, stop *iopool.Oneshot[struct{}], pc *poolCounters) error {
	cpu0 := threadCPU()
	accept := iopool.Spawn(t.Driver(), "accept", func(t *iopool.Task) (struct{}, error) {
		for {
			s, err := gl.Accept(t)
			if err != nil {
				return struct{}{}, err
			}
			pc.conns++
			if a, ok := s.RemoteAddr().(*net.TCPAddr); ok {
				pc.peers = append(pc.peers, a.Port)
			}
			iopool.Spawn(t.Driver(), "conn", func(t *iopool.Task) (struct{}, error) {
				return struct{}{}, echoSocket(t, s, &pc.bufs, &pc.bytes)
			})
		}
	})
	_, err := stop.Recv(t)
	pc.cpuNano = threadCPU() - cpu0
	accept.Cancel()
	if _, jerr := accept.Join(t); jerr != nil && !errors.Is(jerr, iopool.ErrCanceled) {
		return jerr
	}
	return err
}

// echoSocket echoes one connection with Socket.Read and Socket.Write,
// counting the bytes; a peer that resets or goes away ends it quietly.
//
// An idle connection holds no buffer: its task waits in WaitReadable, and
// takes one from the pool's free list only to echo what arrived. Idle, it
// costs its socket and its task (a 2 KiB stack), not 16 KiB more.
func echoSocket(t *iopool.Task, s *iopool.Socket, bufs *bufferList, echoed *int64) error {
	defer s.Close()
	for {
		if err := s.WaitReadable(t); err != nil {
			return nil // the pool stopping
		}
		buf := bufs.get()
		n, err := s.Read(t, buf)
		if err == nil {
			_, err = s.Write(t, buf[:n])
		}
		bufs.put(buf)
		if err != nil {
			return nil // EOF, reset, or the pool stopping: the connection is done
		}
		*echoed += int64(n)
	}
}

// bufferList is one pool's free list of echo buffers. Its tasks run one at
// a time on the pool's loop goroutine, so it needs no lock; a task holds a
// buffer across a Write that suspends, so they cannot share one.
type bufferList struct{ free [][]byte }

func (l *bufferList) get() []byte {
	if n := len(l.free); n > 0 {
		b := l.free[n-1]
		l.free = l.free[:n-1]
		return b
	}
	return make([]byte, 16<<10)
}

func (l *bufferList) put(b []byte) { l.free = append(l.free, b) }

// printPoolTable prints, per pool, its CPU, the connections it accepted,
// the requests it echoed (bytes / message size), its share of them and
// its loop thread's CPU per request.
func printPoolTable(out io.Writer, g *iopool.Group, c config, counters []poolCounters, stats iopool.GroupStats) {
	var total int64
	conns := 0
	for _, pc := range counters {
		total += pc.bytes
		conns += pc.conns
	}
	fmt.Fprintf(out, "\n%4s %4s %6s %10s %6s %12s %10s %10s %10s\n", "pool", "cpu", "conns", "requests", "share", "µs/request", "cycles", "sleeps", "events")
	for i, pc := range counters {
		reqs := pc.bytes / int64(c.size)
		cpu, share, per := "-", 0.0, 0.0
		if g.CPU(i) >= 0 {
			cpu = fmt.Sprint(g.CPU(i))
		}
		if total > 0 {
			share = 100 * float64(pc.bytes) / float64(total)
		}
		if reqs > 0 {
			per = float64(pc.cpuNano) / 1e3 / float64(reqs)
		}
		st := stats.Pools[i]
		fmt.Fprintf(out, "%4d %4s %6d %10d %5.1f%% %12.2f %10d %10d %10d\n", i, cpu, pc.conns, reqs, share, per, st.Cycles, st.Sleeps, st.Events)
	}
	st := stats.Total
	fmt.Fprintf(out, "%4s %4s %6d %10d %6s %12s %10d %10d %10d\n", "all", "", conns, total/int64(c.size), "100%", "", st.Cycles, st.Sleeps, st.Events)
}

// printPlacement prints which pool served the connections dialed from each
// pool's CPU, and how many were served on the CPU that dialed them: all of
// them when steering works, about half with two pools under the kernel's
// hash.
func printPlacement(out io.Writer, g *iopool.Group, c config, counters []poolCounters, dialCPU map[int]int) {
	poolOfCPU := make(map[int]int, g.Len())
	for i := range g.Len() {
		poolOfCPU[g.CPU(i)] = i
	}
	// placed[i][j]: connections dialed on pool i's CPU and served by pool j.
	placed := make([][]int, g.Len())
	for i := range placed {
		placed[i] = make([]int, g.Len())
	}
	home, total := 0, 0
	for j, pc := range counters {
		for _, port := range pc.peers {
			cpu, ok := dialCPU[port]
			if !ok {
				continue // not one of the load's connections
			}
			i := poolOfCPU[cpu]
			placed[i][j]++
			total++
			if i == j {
				home++
			}
		}
	}
	fmt.Fprintf(out, "\nconnections by the CPU that dialed them (the load generator dials from a thread\n"+
		"pinned to each pool's CPU in turn; loopback handles a SYN on the CPU that sent it):\n%-26s", "")
	for j := range g.Len() {
		fmt.Fprintf(out, " %7s", fmt.Sprintf("pool %d", j))
	}
	fmt.Fprintln(out)
	for i, row := range placed {
		fmt.Fprintf(out, "%-26s", fmt.Sprintf("dialed on CPU %d (pool %d)", g.CPU(i), i))
		for _, n := range row {
			fmt.Fprintf(out, " %7d", n)
		}
		fmt.Fprintln(out)
	}
	how := "the kernel's hash placed them whatever the CPU (-steer sends each to the pool of its CPU)"
	if c.steer {
		how = "steered: the reuseport program sends each connection to the pool pinned to the CPU that processed its SYN"
	}
	fmt.Fprintf(out, "%d of %d connections served by the pool on the CPU that dialed them: %s\n", home, total, how)
}
