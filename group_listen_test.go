//go:build linux

package iopool

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestGroupListenAcceptsEveryConnectionOnce(t *testing.T) {
	for _, mode := range listenModes {
		t.Run(mode.name, func(t *testing.T) {
			g := newTestGroup(t, 2, WithPinCPU())
			gl, err := mode.cfg.Listen(g, "tcp4", "127.0.0.1:0")
			require.NoError(t, err)
			s := serveIDs(t, g, gl, nil)
			const conns = 200
			var wg sync.WaitGroup
			errs := make(chan error, conns)
			for id := range uint32(conns) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := exchangeID(gl.Addr(), id); err != nil {
						errs <- err
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			per := s.requireEachOnce(t, conns, 2)
			t.Logf("%s: accepted per pool %v", mode.name, per)
			if mode.name == "hash" {
				// 200 connections hashed over 2 listeners: one of them
				// empty has probability 2^-199.
				require.Positive(t, per[0])
				require.Positive(t, per[1])
			}
			require.NoError(t, g.Close())
			require.ErrorIs(t, <-s.runErr, ErrClosed)
			require.Zero(t, gl.Dropped())
		})
	}
}

func TestGroupListenSteersToTheReceivingCPU(t *testing.T) {
	requireTwoCPUs(t)
	// The test makes each SYN on a chosen CPU by connecting from a thread
	// pinned there: loopback processes a packet on the sending CPU unless
	// RPS moves it.
	if b, err := os.ReadFile("/sys/class/net/lo/queues/rx-0/rps_cpus"); err == nil && strings.Trim(strings.TrimSpace(string(b)), "0,") != "" {
		t.Skipf("RPS on lo (rps_cpus %s) moves packets to other CPUs: the receiving CPU cannot be chosen", strings.TrimSpace(string(b)))
	}
	g := newTestGroup(t, 2, WithPinCPU())
	gl, err := GroupListenConfig{SteerByCPU: true}.Listen(g, "tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	s := serveIDs(t, g, gl, nil)
	const perPool = 20
	for i := range 2 {
		for k := range perPool {
			pool, err := dialID(gl.Addr(), uint32(i*perPool+k), g.CPU(i))
			require.NoError(t, err)
			// Under the kernel's hash, 40 connections landing by chance
			// on the pool of their CPU has probability 2^-40.
			require.Equal(t, i, pool, "a connection made on CPU %d is served by pool %d", g.CPU(i), i)
		}
	}
	s.requireEachOnce(t, 2*perPool, 2)
	require.NoError(t, g.Close())
	<-s.runErr
}

func TestGroupListenReroutesWhenAPoolClosesFirst(t *testing.T) {
	for _, mode := range listenModes {
		t.Run(mode.name, func(t *testing.T) {
			g := newTestGroup(t, 2, WithPinCPU())
			gl, err := mode.cfg.Listen(g, "tcp4", "127.0.0.1:0")
			require.NoError(t, err)
			s := serveIDs(t, g, gl, nil)
			require.NoError(t, g.Pool(0).Close())
			const conns = 100
			for id := range uint32(conns) {
				// From pool 0's CPU: with steering, the program must send
				// them to pool 1 now that pool 0's listener is gone.
				pool, err := dialID(gl.Addr(), id, g.CPU(0))
				require.NoError(t, err, "connection %d after pool 0 closed", id)
				require.Equal(t, 1, pool)
			}
			require.Equal(t, []int{0, conns}, s.requireEachOnce(t, conns, 2))
			require.Zero(t, gl.Dropped(), "nothing was queued on pool 0 when it closed")
			require.NoError(t, g.Close())
			require.ErrorIs(t, <-s.runErr, ErrClosed)
		})
	}
}

// TestGroupListenResetsWhatAClosingPoolHadQueued pins down what happens to
// connections the kernel had already queued for a pool when it closes: they
// are reset (net.ipv4.tcp_migrate_req=0), Dropped counts them, and every
// other connection is served exactly once.
func TestGroupListenResetsWhatAClosingPoolHadQueued(t *testing.T) {
	if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_migrate_req"); err == nil && strings.TrimSpace(string(b)) != "0" {
		t.Skip("net.ipv4.tcp_migrate_req is on: the kernel migrates queued connections instead of resetting them")
	}
	for _, mode := range listenModes {
		t.Run(mode.name, func(t *testing.T) {
			g := newTestGroup(t, 2, WithPinCPU())
			gl, err := mode.cfg.Listen(g, "tcp4", "127.0.0.1:0")
			require.NoError(t, err)
			gates := []*Oneshot[struct{}]{NewOneshot[struct{}](), NewOneshot[struct{}]()}
			s := serveIDs(t, g, gl, gates) // nobody accepts yet
			const conns = 32
			type outcome struct {
				pool int
				err  error
			}
			out := make(chan outcome, conns)
			for id := range uint32(conns) {
				go func() {
					// With steering, all from pool 0's CPU: all queued there.
					pool, err := dialID(gl.Addr(), id, map[bool]int{true: g.CPU(0), false: -1}[mode.cfg.SteerByCPU])
					out <- outcome{pool, err}
				}()
			}
			// Wait until the kernel has queued all of them.
			deadline := time.Now().Add(10 * time.Second)
			for queued(t, gl) < conns {
				require.True(t, time.Now().Before(deadline), "connections queued: %d of %d", queued(t, gl), conns)
				time.Sleep(time.Millisecond)
			}
			require.NoError(t, g.Pool(0).Close())
			require.NoError(t, gates[1].Send(struct{}{}))
			served, reset := 0, 0
			for range conns {
				o := <-out
				switch {
				case o.err == nil:
					require.Equal(t, 1, o.pool)
					served++
				case errors.Is(o.err, syscall.ECONNRESET):
					reset++
				default:
					t.Fatalf("a client saw %v: want an answer from pool 1 or a reset", o.err)
				}
			}
			t.Logf("%s: %d served by pool 1, %d reset with pool 0, Dropped %d", mode.name, served, reset, gl.Dropped())
			require.EqualValues(t, reset, gl.Dropped())
			if mode.cfg.SteerByCPU {
				require.Equal(t, conns, reset)
			} else {
				require.Positive(t, served) // each empty with probability 2^-32
				require.Positive(t, reset)
			}
			s.mu.Lock()
			require.Len(t, s.byID, served)
			s.mu.Unlock()
			require.NoError(t, g.Close())
			<-s.runErr
		})
	}
}

func TestGroupListenRejectsBadRequests(t *testing.T) {
	g := newTestGroup(t, 2)
	_, err := g.Listen("unix", "/tmp/x.sock")
	require.ErrorContains(t, err, "SO_REUSEPORT listeners need tcp")
	_, err = GroupListenConfig{SteerByCPU: true}.Listen(g, "tcp4", "127.0.0.1:0")
	require.ErrorContains(t, err, "WithPinCPU")
	_, err = g.Listen("tcp4", "127.0.0.1:99999")
	require.ErrorContains(t, err, "127.0.0.1:99999")

	// A port held by a socket without SO_REUSEPORT: every listener fails,
	// the ones made are closed.
	fds := openFds(t)
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	_, err = g.Listen("tcp4", l.Addr().String())
	require.ErrorContains(t, err, "address already in use")
	require.Equal(t, fds+1, openFds(t))

	p, err := New()
	require.NoError(t, err)
	defer p.Close()
	gl, err := g.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer gl.Close()
	require.NoError(t, p.Run(func(tk *Task) error {
		require.PanicsWithValue(t, "iopool: GroupListener.Accept called from a task of a pool outside the listener's group",
			func() { _, _ = gl.Accept(tk) })
		return nil
	}))
}

func TestGroupListenOnAClosedPoolFails(t *testing.T) {
	g := newTestGroup(t, 2)
	require.NoError(t, g.Pool(1).Close())
	fds := openFds(t)
	_, err := g.Listen("tcp4", "127.0.0.1:0")
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorContains(t, err, "pool 1")
	require.Equal(t, fds, openFds(t))
}

func TestGroupListenerCloseEndsAccepts(t *testing.T) {
	g := newTestGroup(t, 2)
	gl, err := g.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	s := serveIDs(t, g, gl, nil)
	_, err = exchangeID(gl.Addr(), 0)
	require.NoError(t, err)
	require.NoError(t, gl.Close())
	require.ErrorIs(t, <-s.runErr, ErrClosed, "the roots' Accepts fail once the listeners close")
	require.NoError(t, gl.Close(), "second Close")
	for i := range g.Len() {
		g.Pool(i).mu.Lock()
		require.Empty(t, g.Pool(i).onClose, "closing the listener removes its close hooks")
		g.Pool(i).mu.Unlock()
	}
}

func TestSteeringProgramMapsCPUsToSockets(t *testing.T) {
	for _, c := range []struct {
		name        string
		slots, cpus []int
		want        map[int]uint32 // cpu -> socket index returned
		len         int
	}{
		{"identity", []int{0, 1}, []int{0, 1}, map[int]uint32{0: 0, 1: 1, 5: 5}, 2},
		{"after pool 0 of 3 closed", []int{2, 1}, []int{0, 1, 2}, map[int]uint32{0: steerByHash, 1: 1, 2: 0}, 6},
		{"offset CPUs", []int{0, 1}, []int{4, 6}, map[int]uint32{4: 0, 6: 1, 0: steerByHash, 5: steerByHash}, 6},
		{"wrapped: two pools per CPU", []int{0, 1, 2, 3}, []int{0, 1, 0, 1}, map[int]uint32{0: 0, 1: 1, 2: steerByHash}, 6},
	} {
		prog, err := steeringProgram(c.slots, c.cpus)
		require.NoError(t, err, c.name)
		require.Len(t, prog, c.len, c.name)
		for cpu, want := range c.want {
			require.Equal(t, want, runSteering(t, prog, cpu), "%s: CPU %d", c.name, cpu)
		}
	}
	many := make([]int, 300)
	cpus := make([]int, 300)
	for i := range many {
		many[i], cpus[i] = i, 299-i
	}
	_, err := steeringProgram(many, cpus)
	require.ErrorContains(t, err, "classic BPF jump")
}

func TestGroupListenOnIPv6(t *testing.T) {
	skipWithoutIPv6Loopback(t)
	g := newTestGroup(t, 2)
	gl, err := g.Listen("tcp6", "[::1]:0")
	require.NoError(t, err)
	s := serveIDs(t, g, gl, nil)
	for id := range uint32(20) {
		c, err := net.DialTimeout("tcp6", gl.Addr().String(), 5*time.Second)
		require.NoError(t, err)
		require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], id)
		_, err = c.Write(b[:])
		require.NoError(t, err)
		_, err = io.ReadFull(c, b[:1])
		require.NoError(t, err)
		c.Close()
	}
	s.requireEachOnce(t, 20, 2)
	require.NoError(t, g.Close())
	<-s.runErr
}
