//go:build linux

package iopool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/sys"
)

// newTestGroup makes a group closed (and checked for leaks) at the end of
// the test.
func newTestGroup(t *testing.T, n int, opts ...GroupOption) *Group {
	t.Helper()
	requireNoLeaks(t)
	g, err := NewGroup(n, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, g.Close()) })
	return g
}

func TestNewGroupMakesOnePoolPerAllowedCPU(t *testing.T) {
	var set unix.CPUSet
	require.NoError(t, unix.SchedGetaffinity(os.Getpid(), &set))
	g := newTestGroup(t, 0)
	require.Equal(t, set.Count(), g.Len())
	for i := range g.Len() {
		require.Equal(t, -1, g.CPU(i), "not pinned without WithPinCPU")
		require.Equal(t, i, g.Index(g.Pool(i)))
		require.Equal(t, fmt.Sprintf("pool-%d", i), g.Pool(i).Name())
		require.Same(t, g.Pool(i), g.Driver(i).Pool())
	}
	p, err := New()
	require.NoError(t, err)
	defer p.Close()
	require.Equal(t, -1, g.Index(p))
	require.PanicsWithValue(t, fmt.Sprintf("iopool: Group.Driver(%d): the group has pools 0..%d", g.Len(), g.Len()-1),
		func() { g.Driver(g.Len()) })
}

func TestGroupNamesPoolsByIndex(t *testing.T) {
	g := newTestGroup(t, 2, WithName("srv"))
	require.Equal(t, "srv-0", g.Pool(0).Name())
	require.Equal(t, "srv-1", g.Pool(1).Name())
}

func TestGroupRunGivesEachRootItsPoolAndFirstError(t *testing.T) {
	g := newTestGroup(t, 3)
	var seen [3]atomic.Pointer[Pool]
	require.NoError(t, g.Run(func(tk *Task, i int) error {
		seen[i].Store(tk.Driver().Pool())
		return nil
	}))
	for i := range seen {
		require.Same(t, g.Pool(i), seen[i].Load(), "root %d ran on pool %d", i, i)
	}

	boom := errors.New("boom")
	err := g.Run(func(tk *Task, i int) error {
		if i == 2 {
			return boom
		}
		return tk.Sleep(20 * time.Millisecond) // returns after pool 2's error
	})
	require.ErrorIs(t, err, boom)
	require.ErrorContains(t, err, "group pool 2")

	v := recovered(func() {
		_ = g.Run(func(tk *Task, i int) error {
			if i == 1 {
				panic("pool 1 panics")
			}
			return nil
		})
	})
	pe, ok := v.(*PanicError)
	require.True(t, ok, "Run re-raises the root's panic in the caller's goroutine, got %#v", v)
	require.Equal(t, "pool 1 panics", pe.Value)
	require.ErrorIs(t, g.Run(nil), ErrNilTask)
}

// recovered runs fn and returns what it panicked with.
func recovered(fn func()) (v any) {
	defer func() { v = recover() }()
	fn()
	return nil
}

func TestGroupCloseClosesEveryPool(t *testing.T) {
	requireNoLeaks(t)
	g, err := NewGroup(3, WithLockOSThread())
	require.NoError(t, err)
	started := make(chan struct{}, 3)
	runErr := make(chan error, 1)
	go func() {
		runErr <- g.Run(func(tk *Task, i int) error {
			started <- struct{}{}
			return tk.Sleep(time.Hour)
		})
	}()
	for range 3 {
		<-started
	}
	require.NoError(t, g.Close())
	err = <-runErr
	require.ErrorIs(t, err, ErrClosed)
	for i := range g.Len() {
		require.ErrorIs(t, g.Pool(i).Run(func(*Task) error { return nil }), ErrClosed, "pool %d", i)
	}
	require.NoError(t, g.Close(), "second Close")
}

func TestGroupStatsArePerPoolAndSummed(t *testing.T) {
	g := newTestGroup(t, 2)
	require.NoError(t, g.Run(func(tk *Task, i int) error {
		for range 3 * (i + 1) { // pool 0 spawns 3 tasks, pool 1 spawns 6
			if _, err := Spawn(tk.Driver(), "x", func(*Task) (int, error) { return 0, nil }).Join(tk); err != nil {
				return err
			}
		}
		return nil
	}))
	s := g.Stats()
	require.Len(t, s.Pools, 2)
	require.Equal(t, uint64(1+3), s.Pools[0].TasksSpawned)
	require.Equal(t, uint64(1+6), s.Pools[1].TasksSpawned)
	require.Equal(t, uint64(2+9), s.Total.TasksSpawned)
	require.Equal(t, s.Pools[0].Cycles+s.Pools[1].Cycles, s.Total.Cycles)
}

func TestStatsAddSumsEveryField(t *testing.T) {
	var one Stats
	v := reflect.ValueOf(&one).Elem()
	for i := range v.NumField() {
		v.Field(i).SetZero()
		switch f := v.Field(i); f.Kind() {
		case reflect.Uint64:
			f.SetUint(1)
		case reflect.Int64:
			f.SetInt(1)
		default:
			t.Fatalf("Stats.%s has kind %v: teach Stats.add and this test about it", v.Type().Field(i).Name, f.Kind())
		}
	}
	sum := reflect.ValueOf(one.add(one))
	for i := range sum.NumField() {
		require.EqualValues(t, 2, sum.Field(i).Convert(reflect.TypeFor[int64]()).Int(), "Stats.add misses %s", sum.Type().Field(i).Name)
	}
}

// TestGroupCrossPoolRequestResponse: a task of pool 0 asks pool 1 to do
// work (Spawn on pool 1's driver) and gets the answer through a Oneshot
// and through the handle, many times over; the work runs on pool 1's
// thread.
func TestGroupCrossPoolRequestResponse(t *testing.T) {
	g := newTestGroup(t, 2, WithLockOSThread())
	var tid1 int64
	require.NoError(t, g.Run(func(tk *Task, i int) error {
		if i == 1 {
			tid1 = int64(unix.Gettid())
			return nil
		}
		return nil
	}))
	const rounds = 500
	done := NewOneshot[struct{}]()
	err := g.Run(func(tk *Task, i int) error {
		if i != 0 {
			// A pool runs tasks only while its root runs: keep pool 1
			// serving until pool 0 is done with it.
			_, err := done.Recv(tk)
			return err
		}
		defer done.Send(struct{}{})
		for r := range rounds {
			reply := NewOneshot[int]()
			h := Spawn(g.Driver(1), "square", func(w *Task) (int64, error) {
				if w.Driver().Pool() != g.Pool(1) {
					return 0, errors.New("ran on the wrong pool")
				}
				if err := reply.Send(r * r); err != nil {
					return 0, err
				}
				return int64(unix.Gettid()), nil
			})
			v, err := reply.Recv(tk)
			if err != nil {
				return err
			}
			if v != r*r {
				return errors.New("wrong answer")
			}
			tid, err := h.Join(tk)
			if err != nil {
				return err
			}
			if tid != tid1 {
				return errors.New("the task of pool 1 ran off pool 1's thread")
			}
		}
		return nil
	})
	require.NoError(t, err)
	s := g.Stats()
	require.GreaterOrEqual(t, s.Pools[1].TasksSpawned, uint64(rounds))
}

// idServer serves a GroupListener on every pool of g: a connection sends a
// 4-byte id, the server records which pool accepted it and answers 1 byte.
type idServer struct {
	mu     sync.Mutex
	byID   map[uint32][]int // the pools that accepted each id
	runErr chan error
}

// serveIDs starts the group's roots. With gates, root i waits for gates[i]
// before accepting anything.
func serveIDs(t *testing.T, g *Group, gl *GroupListener, gates []*Oneshot[struct{}]) *idServer {
	s := &idServer{byID: make(map[uint32][]int), runErr: make(chan error, 1)}
	go func() {
		s.runErr <- g.Run(func(tk *Task, i int) error {
			if gates != nil {
				if _, err := gates[i].Recv(tk); err != nil {
					return err
				}
			}
			for {
				c, err := gl.Accept(tk)
				if err != nil {
					return err
				}
				Spawn(tk.Driver(), "id", func(tk *Task) (struct{}, error) {
					defer c.Close()
					var b [4]byte
					if _, err := io.ReadFull(c.Reader(tk), b[:]); err != nil {
						return struct{}{}, nil // a client that gave up
					}
					s.mu.Lock()
					id := binary.LittleEndian.Uint32(b[:])
					s.byID[id] = append(s.byID[id], i)
					s.mu.Unlock()
					_, err := c.Write(tk, []byte{byte(i)})
					return struct{}{}, err
				})
			}
		})
	}()
	return s
}

// requireEachOnce checks that ids [0, n) were each accepted by one pool,
// and returns how many each pool took.
func (s *idServer) requireEachOnce(t *testing.T, n, pools int) []int {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	per := make([]int, pools)
	require.Len(t, s.byID, n)
	for id := range uint32(n) {
		require.Len(t, s.byID[id], 1, "id %d accepted %v", id, s.byID[id])
		per[s.byID[id][0]]++
	}
	return per
}

// dialID connects to addr, sends id and returns the pool index the server
// answered with. If cpu ≥ 0 the connection is made from a thread pinned to
// that CPU, so that the loopback SYN is processed there.
func dialID(addr net.Addr, id uint32, cpu int) (int, error) {
	type result struct {
		pool int
		err  error
	}
	res := make(chan result, 1)
	// Off the main thread, like a pinned pool: the pinned thread exits with
	// the goroutine.
	goLoop(cpu >= 0, func() {
		if cpu >= 0 {
			var set unix.CPUSet
			set.Set(cpu)
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				res <- result{-1, err}
				return
			}
		}
		pool, err := exchangeID(addr, id)
		res <- result{pool, err}
	})
	r := <-res
	return r.pool, r.err
}

// exchangeID makes the connection with blocking syscalls on the calling
// thread (connect is where the SYN leaves).
func exchangeID(addr net.Addr, id uint32) (int, error) {
	ta := addr.(*net.TCPAddr)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 10}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	sa := &unix.SockaddrInet4{Port: ta.Port}
	copy(sa.Addr[:], ta.IP.To4())
	if err := unix.Connect(fd, sa); err != nil {
		return -1, err
	}
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], id)
	if _, err := unix.Write(fd, b[:]); err != nil {
		return -1, err
	}
	n, err := unix.Read(fd, b[:1])
	switch {
	case err != nil:
		return -1, err
	case n == 0:
		return -1, io.EOF
	}
	return int(b[0]), nil
}

// listenModes are the two ways a GroupListener places connections.
var listenModes = []struct {
	name string
	cfg  GroupListenConfig
}{{"hash", GroupListenConfig{}}, {"steer", GroupListenConfig{SteerByCPU: true}}}

// requireTwoCPUs skips a test that needs two CPUs to tell pools apart.
func requireTwoCPUs(t *testing.T) {
	if n := len(processCPUs()); n < 2 {
		t.Skipf("the process may run on %d CPU: steering by CPU cannot be observed", n)
	}
}

// queued counts the connections waiting in the group's accept queues.
func queued(t *testing.T, gl *GroupListener) int {
	gl.mu.Lock()
	defer gl.mu.Unlock()
	n := 0
	for _, l := range gl.ls {
		if l != nil {
			info, err := unix.GetsockoptTCPInfo(l.sock.fd, unix.IPPROTO_TCP, unix.TCP_INFO)
			require.NoError(t, err)
			n += int(info.Unacked)
		}
	}
	return n
}

// runSteering interprets the classic BPF subset steeringProgram emits.
func runSteering(t *testing.T, prog []unix.SockFilter, cpu int) uint32 {
	var a uint32
	for pc := 0; pc < len(prog); pc++ {
		ins := prog[pc]
		switch ins.Code {
		case bpfLdAbsW:
			require.Equal(t, uint32(0xfffff000+skfAdCPU), ins.K)
			a = uint32(cpu)
		case bpfJeqK:
			if a == ins.K {
				pc += int(ins.Jt)
			} else {
				pc += int(ins.Jf)
			}
		case bpfRetA:
			return a
		case bpfRetK:
			return ins.K
		default:
			t.Fatalf("unexpected opcode %#x", ins.Code)
		}
	}
	t.Fatal("the program ran off its end")
	return 0
}

// A pool that cannot be made fails NewGroup with its index, and the pools
// made before it are closed.
func TestNewGroupFailureClosesThePoolsMade(t *testing.T) {
	requireNoLeaks(t)
	var calls atomic.Int32
	fs := new(sys.Faults)
	fs.Set(func(c sys.Call) error {
		if c == sys.CallEventfd && calls.Add(1) == 3 {
			return unix.EMFILE
		}
		return nil
	})
	_, err := NewGroup(4, withFaults(fs))
	require.ErrorIs(t, err, unix.EMFILE)
	require.ErrorContains(t, err, "NewGroup: pool 2")
}
