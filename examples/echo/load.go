//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// histogram counts latencies in log-linear buckets (8 per power of two),
// so recording allocates nothing and quantiles are within 12.5 %.
type histogram [64 * 8]uint64

func bucketOf(ns int64) int {
	if ns < 8 {
		return int(max(ns, 0))
	}
	e := bits.Len64(uint64(ns)) - 1 // ns in [2^e, 2^(e+1))
	return e*8 + int(uint64(ns)>>(e-3)&7)
}

func bucketValue(i int) time.Duration {
	if i < 8 {
		return time.Duration(i)
	}
	e, m := i/8, i%8
	return time.Duration((8 + m) << (e - 3))
}

func (h *histogram) add(o *histogram) {
	for i := range h {
		h[i] += o[i]
	}
}

func (h *histogram) quantile(q float64) time.Duration {
	var total uint64
	for _, c := range h {
		total += c
	}
	want := uint64(q * float64(total))
	var seen uint64
	for i, c := range h {
		seen += c
		if seen > want {
			return bucketValue(i)
		}
	}
	return 0
}

type loadResult struct {
	requests       int64
	elapsed        time.Duration
	p50, p99, p999 time.Duration
	dialCPU        map[int]int // local port -> the CPU that dialed it (config.dialCPUs)
}

// drive runs c.conns closed-loop clients against addr for c.duration: each
// writes a message, reads the echo in full and verifies every byte.
func drive(ctx context.Context, addr string, c config, out io.Writer) (loadResult, error) {
	return driveMarked(ctx, addr, c, out, func(string) {})
}

// driveMarked is drive that also calls mark("start") once every connection
// is open and mark("end") when the last client has stopped, so that a
// server in another process can measure its CPU over exactly that window.
func driveMarked(ctx context.Context, addr string, c config, out io.Writer, mark func(string)) (loadResult, error) {
	var count atomic.Int64
	var firstErr syncErr
	var wg sync.WaitGroup
	var mu sync.Mutex
	var all histogram
	conns, dialCPU, err := dialConns(addr, c)
	if err != nil {
		return loadResult{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.duration)
	defer cancel()
	mark("start")
	start := time.Now()
	for i, conn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
			defer stop()
			var h histogram
			msg := bytes.Repeat([]byte{byte('a' + i%26)}, c.size)
			for j := range msg {
				msg[j] += byte(j % 7)
			}
			got := make([]byte, c.size)
			for ctx.Err() == nil {
				t0 := time.Now()
				if _, err := conn.Write(msg); err != nil {
					if ctx.Err() == nil {
						firstErr.set(fmt.Errorf("load: write: %w", err))
					}
					break
				}
				if _, err := io.ReadFull(conn, got); err != nil {
					if ctx.Err() == nil {
						firstErr.set(fmt.Errorf("load: read: %w", err))
					}
					break
				}
				if !bytes.Equal(got, msg) {
					firstErr.set(errMismatch)
					cancel()
					break
				}
				h[bucketOf(int64(time.Since(t0)))]++
				count.Add(1)
			}
			mu.Lock()
			all.add(&h)
			mu.Unlock()
		}()
	}
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		if !c.progress {
			return
		}
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		var last int64
		for {
			select {
			case <-ctx.Done():
				fmt.Fprint(out, "\n")
				return
			case <-tick.C:
				n := count.Load()
				fmt.Fprintf(out, "\r%5.1fs  %9d requests  %9d req/s", time.Since(start).Seconds(), n, n-last)
				last = n
			}
		}
	}()
	wg.Wait()
	elapsed := time.Since(start)
	mark("end")
	cancel()
	<-progressDone
	if firstErr.err != nil {
		return loadResult{}, firstErr.err
	}
	return loadResult{
		requests: count.Load(), elapsed: elapsed,
		p50: all.quantile(0.50), p99: all.quantile(0.99), p999: all.quantile(0.999),
		dialCPU: dialCPU,
	}, nil
}

// dialConns opens c.conns connections to addr. With c.dialCPUs it makes
// connection k from a thread pinned to c.dialCPUs[k % len(c.dialCPUs)] and
// returns the CPU of each connection keyed by its local port: loopback
// processes a SYN on the CPU that sent it (unless RPS moves it), so that is
// the CPU a steered group sees the connection arrive on. Without
// c.dialCPUs it dials from wherever the goroutine runs (then all from one
// CPU, as often as not) and the map is nil.
func dialConns(addr string, c config) ([]net.Conn, map[int]int, error) {
	if len(c.dialCPUs) == 0 {
		conns := make([]net.Conn, 0, c.conns)
		for range c.conns {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				closeAll(conns)
				return nil, nil, fmt.Errorf("load: dial %s: %w", addr, err)
			}
			conns = append(conns, conn)
		}
		return conns, nil, nil
	}
	conns := make([]net.Conn, c.conns)
	errs := make([]error, len(c.dialCPUs))
	var wg sync.WaitGroup
	for w, cpu := range c.dialCPUs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unpin, err := pinThread(cpu)
			if err != nil {
				errs[w] = err
				return
			}
			defer unpin()
			// net.Dial connects on the calling goroutine's thread, this
			// one: the SYN leaves from CPU cpu.
			for k := w; k < c.conns; k += len(c.dialCPUs) {
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					errs[w] = fmt.Errorf("load: dial %s from CPU %d: %w", addr, cpu, err)
					return
				}
				conns[k] = conn
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		closeAll(conns)
		return nil, nil, err
	}
	dialCPU := make(map[int]int, c.conns)
	for k, conn := range conns {
		dialCPU[conn.LocalAddr().(*net.TCPAddr).Port] = c.dialCPUs[k%len(c.dialCPUs)]
	}
	return conns, dialCPU, nil
}

// pinThread locks the calling goroutine to its thread and pins the thread
// to cpu; unpin restores the thread's CPUs and unlocks it. (Restored, not
// left to die with the goroutine: the runtime never ends the process's main
// thread, the goroutine may be on it, and the process's CPU set is read
// from it.) If the restore fails the thread stays locked and exits with
// the goroutine.
func pinThread(cpu int) (unpin func(), err error) {
	runtime.LockOSThread()
	var orig, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &orig); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("load: sched_getaffinity: %w", err)
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("load: pinning a dialing thread to CPU %d: %w", cpu, err)
	}
	return func() {
		if unix.SchedSetaffinity(0, &orig) == nil {
			runtime.UnlockOSThread()
		}
	}, nil
}

// closeAll closes the connections that were opened (nil entries skipped).
func closeAll(conns []net.Conn) {
	for _, conn := range conns {
		if conn != nil {
			conn.Close()
		}
	}
}
