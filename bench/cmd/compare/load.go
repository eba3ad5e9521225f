//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// errNoRequest: no request completed in the measured window.
var errNoRequest = errors.New("no request completed")

type loadResult struct {
	rps, p99, cpuPerReq float64
	bytes               int64
}

// window measures one server for d after a short warm-up: the clients
// count requests (and record latencies) only while measuring() is true.
type window struct {
	measuring, stop atomic.Bool
	reqs, bytes     atomic.Int64
	errc            chan error
}

func newWindow(clients int) *window { return &window{errc: make(chan error, clients)} }

// record counts n requests of size bytes answered after took.
func (w *window) record(lat *[]time.Duration, took time.Duration, n, size int) {
	if w.measuring.Load() {
		*lat = append(*lat, took)
		w.reqs.Add(int64(n))
		w.bytes.Add(int64(n * size))
	}
}

// run warms up, measures for d and stops the clients, then computes the
// result from the server's CPU time over the window.
func (w *window) run(ctx context.Context, s *server, d time.Duration, wg *sync.WaitGroup, closeAll func(), lat [][]time.Duration) (loadResult, error) {
	defer func() {
		w.stop.Store(true)
		closeAll()
		wg.Wait()
	}()
	time.Sleep(min(d/5, 500*time.Millisecond)) // warm-up
	pid := s.cmd.Process.Pid
	cpu0, err := cpuNanos(pid)
	if err != nil {
		return loadResult{}, err
	}
	t0 := time.Now()
	w.measuring.Store(true)
	select {
	case <-time.After(d):
	case err := <-w.errc:
		return loadResult{}, err
	case <-ctx.Done():
		return loadResult{}, ctx.Err()
	}
	w.measuring.Store(false)
	elapsed := time.Since(t0)
	cpu1, err := cpuNanos(pid)
	if err != nil {
		return loadResult{}, err
	}
	n := w.reqs.Load()
	if n == 0 {
		return loadResult{}, errNoRequest
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	return loadResult{
		rps:       float64(n) / elapsed.Seconds(),
		p99:       float64(all[len(all)*99/100].Nanoseconds()) / 1e3,
		cpuPerReq: float64(cpu1-cpu0) / float64(n) / 1e3,
		bytes:     w.bytes.Load(),
	}, nil
}

// loadEcho drives s with lp.Conns closed-loop clients: each writes
// lp.Depth messages of lp.Size bytes at once (pipelined when Depth > 1),
// reads every echo back and checks every byte. The latency recorded is
// that of the whole batch.
func loadEcho(ctx context.Context, s *server, lp LoadPoint, d time.Duration) (loadResult, error) {
	cs := make([]net.Conn, 0, lp.Conns)
	closeAll := func() {
		for _, c := range cs {
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		}
	}
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	for range lp.Conns {
		c, err := net.Dial("tcp4", s.addr)
		if err != nil {
			return loadResult{}, fmt.Errorf("dial %s: %w", s.addr, err)
		}
		cs = append(cs, c)
	}
	w := newWindow(lp.Conns)
	lat := make([][]time.Duration, lp.Conns)
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			batch := lp.Size * lp.Depth
			msg, got := make([]byte, batch), make([]byte, batch)
			for seq := 0; !w.stop.Load() && ctx.Err() == nil; seq++ {
				for j := range msg {
					msg[j] = byte(i*7 + seq + j)
				}
				start := time.Now()
				if _, err := c.Write(msg); err != nil {
					w.errc <- fmt.Errorf("write: %w", err)
					return
				}
				if _, err := io.ReadFull(c, got); err != nil {
					w.errc <- fmt.Errorf("read the echo: %w", err)
					return
				}
				if !bytes.Equal(got, msg) {
					w.errc <- fmt.Errorf("connection %d: the echo of batch %d differs from what was sent", i, seq)
					return
				}
				w.record(&lat[i], time.Since(start), lp.Depth, lp.Size)
			}
		}()
	}
	return w.run(ctx, s, d, &wg, closeAll, lat)
}

// loadHTTP drives an HTTP server with clients keep-alive clients, each
// POSTing bodies of 1 to 3 KB and checking that the answer is the body's
// length.
func loadHTTP(ctx context.Context, s *server, clients int, d time.Duration) (loadResult, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := "http://" + s.addr + "/echo-length"
	w := newWindow(clients)
	lat := make([][]time.Duration, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			body := bytes.Repeat([]byte("0123456789abcdef"), 3000/16+1)
			var got []byte
			for !w.stop.Load() && ctx.Err() == nil {
				n := 1000 + rng.IntN(2001)
				start := time.Now()
				resp, err := client.Post(url, "application/octet-stream", bytes.NewReader(body[:n]))
				if err != nil {
					if !w.stop.Load() {
						w.errc <- err
					}
					return
				}
				got, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK || string(got) != strconv.Itoa(n) {
					if !w.stop.Load() {
						w.errc <- fmt.Errorf("POST of %d bytes: status %d, body %q, %v", n, resp.StatusCode, got, err)
					}
					return
				}
				w.record(&lat[i], time.Since(start), 1, n)
			}
		}()
	}
	return w.run(ctx, s, d, &wg, tr.CloseIdleConnections, lat)
}

// measureIdle opens cfg.Idle connections to a fresh server, echoes one
// byte on each so that the server holds them all, and reports the growth
// of its resident memory per connection.
func measureIdle(ctx context.Context, cfg Config, impl string) (Idle, error) {
	s, err := startServer(ctx, cfg, impl, false)
	if err != nil {
		return Idle{}, err
	}
	defer s.stop()
	pid := s.cmd.Process.Pid
	// Warm the server up with a few connections first, so that its start-up
	// allocations are not counted.
	if _, err := loadEcho(ctx, s, LoadPoint{Conns: 4, Size: 64, Depth: 1}, 100*time.Millisecond); err != nil {
		return Idle{}, fmt.Errorf("%s idle warm-up: %w", impl, err)
	}
	time.Sleep(200 * time.Millisecond)
	before, err := rssBytes(pid)
	if err != nil {
		return Idle{}, err
	}
	conns := make([]net.Conn, 0, cfg.Idle)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	b := []byte{'x'}
	for range cfg.Idle {
		c, err := net.Dial("tcp4", s.addr)
		if err != nil {
			return Idle{}, fmt.Errorf("%s: idle connection %d: %w (raise the fd limit or lower -idle)", impl, len(conns)+1, err)
		}
		conns = append(conns, c)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(b); err != nil {
			return Idle{}, err
		}
		if _, err := io.ReadFull(c, b); err != nil || b[0] != 'x' {
			return Idle{}, fmt.Errorf("%s: idle connection %d did not echo: %v", impl, len(conns), err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	after, err := rssBytes(pid)
	if err != nil {
		return Idle{}, err
	}
	return Idle{Impl: impl, Conns: cfg.Idle, BytesPerCon: float64(after-before) / float64(cfg.Idle)}, nil
}
