//go:build linux

package iopool

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// GroupListenConfig holds the options of a group listener.
type GroupListenConfig struct {
	// SteerByCPU attaches a classic BPF program to the listeners'
	// SO_REUSEPORT group (SO_ATTACH_REUSEPORT_CBPF) that hands each new
	// connection to the pool pinned to the CPU that processed its SYN, as
	// Seastar and nginx do, instead of the kernel's hash of the addresses:
	// with NIC queues (or RPS) spreading packets over CPUs, a connection is
	// served on the core that receives its packets. It needs a group made
	// with WithPinCPU. A connection received on a CPU without a pool is
	// placed by the kernel's hash; with more pools than CPUs only the first
	// pool on each CPU is steered to, so the others get no connections.
	SteerByCPU bool
	// Backlog is each listener's accept queue length; 0 means 4096.
	Backlog int
}

// GroupListener is one SO_REUSEPORT listener per pool of a group, all on
// the same TCP address: the kernel places every new connection in the
// accept queue of exactly one of them, and a pool's tasks accept only from
// their own pool's listener, so a connection lives on the pool that
// accepted it and the pools share no accept lock.
//
// Pool i's listener is closed when pool i closes (after its tasks have
// ended), which removes it from the SO_REUSEPORT group: connections arriving
// later go to the other pools' listeners. Connections that were waiting in
// its accept queue at that moment are reset by the kernel (unless the
// sysctl net.ipv4.tcp_migrate_req is 1, when the kernel moves them to
// another listener); Dropped counts them. To stop a server without losing
// any, stop connecting clients first (or close the GroupListener after the
// roots have stopped accepting and drained).
type GroupListener struct {
	g       *Group
	addr    net.Addr
	steer   bool
	dropped atomic.Int64

	mu     sync.Mutex
	ls     []*Listener // mu: pool i's listener, nil once closed; only closed under mu
	slots  []int       // mu: slots[s] is the pool whose listener is socket s of the kernel's reuseport group
	unhook []func()    // mu: removes the close hooks from the pools
}

// Listen opens one SO_REUSEPORT listener per pool on a tcp, tcp4 or tcp6
// address (port 0 picks one free port for all of them), with the
// kernel's hash placing connections. See GroupListenConfig to steer them by
// CPU instead.
func (g *Group) Listen(network, addr string) (*GroupListener, error) {
	return GroupListenConfig{}.Listen(g, network, addr)
}

// Listen opens the group's listeners with the configuration's options.
func (c GroupListenConfig) Listen(g *Group, network, addr string) (*GroupListener, error) {
	fail := func(err error) (*GroupListener, error) {
		return nil, wrapError(err, "Group.Listen %s %s", network, addr)
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return fail(fmt.Errorf("unsupported network %q (SO_REUSEPORT listeners need tcp, tcp4 or tcp6)", network))
	}
	if c.SteerByCPU {
		for i := range g.Len() {
			if g.CPU(i) < 0 {
				return fail(errors.New("SteerByCPU needs a group made with WithPinCPU (pool i on its own CPU)"))
			}
		}
	}
	gl := &GroupListener{g: g, steer: c.SteerByCPU, ls: make([]*Listener, g.Len())}
	gl.mu.Lock()
	defer gl.mu.Unlock()
	// The pools' close hooks take gl.mu, so a pool closing while the
	// listeners are made waits for them and then closes its own.
	for i := range g.Len() {
		remove, ok := g.Pool(i).addCloseHook(func() { gl.closePool(i) })
		if !ok {
			gl.closeLocked()
			return fail(wrapError(ErrClosed, "pool %d", i))
		}
		gl.unhook = append(gl.unhook, remove)
	}
	lc := ListenConfig{ReusePort: true, Backlog: c.Backlog}
	bind := addr
	for i := range g.Len() {
		// Listen order is the kernel's socket order in the reuseport group:
		// pool i's listener is socket i.
		l, err := lc.Listen(g.Driver(i), network, bind)
		if err != nil {
			gl.closeLocked()
			return fail(wrapError(err, "pool %d", i))
		}
		gl.ls[i] = l
		gl.slots = append(gl.slots, i)
		if i == 0 {
			gl.addr = l.Addr()
			bind = gl.addr.String() // the others share the port the first one got
		}
	}
	if gl.steer {
		if err := gl.attachSteeringLocked(); err != nil {
			gl.closeLocked()
			return fail(err)
		}
	}
	return gl, nil
}

// Addr returns the address the listeners share.
func (gl *GroupListener) Addr() net.Addr { return gl.addr }

// Accept waits inside task t for a connection on the listener of t's pool
// and returns it registered on that pool (see Listener.Accept). It returns
// ErrClosed once that listener is closed. Calling it from a task of a pool
// outside the group panics.
func (gl *GroupListener) Accept(t *Task) (*Socket, error) {
	i := gl.g.Index(t.Driver().Pool())
	if i < 0 {
		panic("iopool: GroupListener.Accept called from a task of a pool outside the listener's group")
	}
	gl.mu.Lock()
	l := gl.ls[i]
	gl.mu.Unlock()
	if l == nil {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: gl.addr, Err: ErrClosed}
	}
	return l.Accept(t)
}

// Dropped returns how many connections were waiting in a listener's accept
// queue when the group closed it (with its pool, or by Close): the kernel
// resets them unless net.ipv4.tcp_migrate_req is 1. The queue is read just
// before the close; a connection completing its handshake in between is
// reset without being counted.
func (gl *GroupListener) Dropped() int64 { return gl.dropped.Load() }

// Close closes every pool's listener. Closing twice is a no-op.
func (gl *GroupListener) Close() error {
	gl.mu.Lock()
	defer gl.mu.Unlock()
	return gl.closeLocked()
}

func (gl *GroupListener) closeLocked() error {
	var errs []error
	for i := range gl.ls {
		if err := gl.closeListenerLocked(i); err != nil {
			errs = append(errs, err)
		}
	}
	for _, remove := range gl.unhook {
		remove()
	}
	gl.unhook = nil
	return errors.Join(errs...)
}

// closePool is pool i's close hook: it runs once the pool's tasks have
// ended, so no accept of that pool is in flight on the listener's fd.
func (gl *GroupListener) closePool(i int) {
	gl.mu.Lock()
	defer gl.mu.Unlock()
	_ = gl.closeListenerLocked(i) // the pool is going away: nobody to tell
	if gl.steer && len(gl.slots) > 0 {
		// The kernel moved the last socket into the closed one's place:
		// steer by the new order. On failure the old program stays; it
		// still never loses a connection, it only misplaces some.
		_ = gl.attachSteeringLocked()
	}
}

// closeListenerLocked closes pool i's listener, counting the connections
// its accept queue held, and mirrors the kernel's removal of the socket
// from the reuseport group: the last socket takes the closed one's slot.
func (gl *GroupListener) closeListenerLocked(i int) error {
	l := gl.ls[i]
	if l == nil {
		return nil
	}
	_ = l.sock.fr.withFd(func(fd int) error {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err == nil {
			// For a listening socket tcpi_unacked is the accept queue length.
			gl.dropped.Add(int64(info.Unacked))
		}
		return err
	})
	gl.ls[i] = nil
	for s, pool := range gl.slots {
		if pool == i {
			last := len(gl.slots) - 1
			gl.slots[s] = gl.slots[last]
			gl.slots = gl.slots[:last]
			break
		}
	}
	return l.Close()
}

// attachSteeringLocked attaches the CPU steering program for the current
// socket order to the reuseport group, through any live listener.
func (gl *GroupListener) attachSteeringLocked() error {
	prog, err := steeringProgram(gl.slots, gl.g.cpus)
	if err != nil {
		return err
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: unsafe.SliceData(prog)}
	err = gl.ls[gl.slots[0]].sock.fr.withFd(func(fd int) error {
		return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &fprog)
	})
	if err != nil {
		return fmt.Errorf("attaching the CPU steering program: %w", syscallErr("setsockopt SO_ATTACH_REUSEPORT_CBPF", err))
	}
	return nil
}

// Classic BPF, include/uapi/linux/filter.h and bpf_common.h. x/sys/unix has
// the opcodes but not the ancillary offsets.
const (
	skfAdOff = -0x1000 // SKF_AD_OFF: loads at this offset read ancillary data
	skfAdCPU = 36      // SKF_AD_CPU: the CPU processing the packet

	bpfLdAbsW = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS  // A = word at k
	bpfJeqK   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K // pc += (A == k) ? jt : jf
	bpfRetA   = unix.BPF_RET | unix.BPF_A                // return A
	bpfRetK   = unix.BPF_RET | unix.BPF_K                // return k

	// steerByHash is returned for a CPU without a pool: an index past the
	// group's sockets makes the kernel fall back to its hash.
	steerByHash = 0xffffffff
)

// steeringProgram builds the reuseport program that returns, for the CPU
// processing a SYN, the socket index of the pool pinned to that CPU:
// slots[s] is the pool at socket index s, cpus[pool] its CPU. When socket s
// is the pool on CPU s for every s it is the two instructions
//
//	ld #cpu ; ret a
//
// (a CPU past the last socket falls back to the hash); otherwise one
// comparison per CPU:
//
//	ld #cpu ; jeq #cpuA, retA ; jeq #cpuB, retB ; ... ; ret #hash ; retA: ret #sA ; retB: ret #sB ...
func steeringProgram(slots, cpus []int) ([]unix.SockFilter, error) {
	offCPU := int32(skfAdOff + skfAdCPU) // negative: the kernel's ancillary area
	ldCPU := unix.SockFilter{Code: bpfLdAbsW, K: uint32(offCPU)}
	identity := true
	for s, pool := range slots {
		identity = identity && cpus[pool] == s
	}
	if identity {
		return []unix.SockFilter{ldCPU, {Code: bpfRetA}}, nil
	}
	// The first socket on a CPU takes that CPU's connections.
	type entry struct{ cpu, slot int }
	var table []entry
	seen := make(map[int]bool)
	for s, pool := range slots {
		if c := cpus[pool]; !seen[c] {
			seen[c] = true
			table = append(table, entry{c, s})
		}
	}
	// Every jeq jumps over the rest of the jeqs and the fallback, then over
	// the returns before its own: len(table) instructions. Jump offsets are
	// 8 bits.
	if len(table) > 255 {
		return nil, fmt.Errorf("CPU steering: %d CPUs need more than a classic BPF jump can reach; pin pool i to CPU i for any count", len(table))
	}
	prog := []unix.SockFilter{ldCPU}
	for _, e := range table {
		prog = append(prog, unix.SockFilter{Code: bpfJeqK, Jt: uint8(len(table)), K: uint32(e.cpu)})
	}
	prog = append(prog, unix.SockFilter{Code: bpfRetK, K: steerByHash})
	for _, e := range table {
		prog = append(prog, unix.SockFilter{Code: bpfRetK, K: uint32(e.slot)})
	}
	return prog, nil
}
