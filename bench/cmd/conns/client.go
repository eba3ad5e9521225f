//go:build linux

package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// clientArg, as the first argument, runs the program as the client.
const clientArg = "-client"

// perSourceAddr is how many connections share one source address: far
// fewer than the 28,231 ports of Linux's default ephemeral range, so that
// connect finds a free port at its first tries.
const perSourceAddr = 1000

// load is the client: one epoll loop, level-triggered, over nonblocking
// sockets, with a request (an echo or a ping) in flight on at most Window
// connections at a time. Its own memory per connection is the fd number.
type load struct {
	dst      unix.SockaddrInet4
	base     int // the global index of connection 0 of this shard
	n, size  int
	window   int
	every    time.Duration
	timeout  time.Duration
	epfd     int
	fds      []int32            // -1: failed, counted in errors
	inflight map[int32]*request // by connection index
	events   []unix.EpollEvent
	errors   int
	rtts     []time.Duration // of the pings
	idle     []time.Duration // the pings while the other connections were idle
	pinging  bool            // a ping is in flight
	nextPing time.Time
	progress time.Time // when the last request completed
	rng      *rand.Rand
}

// request is an echo or a ping waiting for its bytes to come back.
type request struct {
	conn int32
	want []byte
	got  []byte
	sent time.Time
	ping bool
}

func clientMain(args []string) int {
	fs := flag.NewFlagSet("conns client", flag.ExitOnError)
	addr := fs.String("addr", "", "server address")
	var cfg load
	fs.IntVar(&cfg.n, "n", 0, "")
	fs.IntVar(&cfg.size, "size", 64, "")
	fs.IntVar(&cfg.window, "window", 256, "")
	fs.DurationVar(&cfg.every, "ping-every", time.Millisecond, "")
	fs.DurationVar(&cfg.timeout, "timeout", 30*time.Second, "")
	_ = fs.Parse(args)
	ta, err := net.ResolveTCPAddr("tcp4", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "conns client:", err)
		return 1
	}
	cfg.dst.Port = ta.Port
	copy(cfg.dst.Addr[:], ta.IP.To4())

	// One fd table holds as many sockets as RLIMIT_NOFILE allows; past
	// that, the connections are split into shards, each on a locked
	// thread with an fd table of its own (unshare CLONE_FILES).
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		fmt.Fprintln(os.Stderr, "conns client: getrlimit:", err)
		return 1
	}
	perShard := max(int(rl.Cur)-256, 1)
	shards := (cfg.n + perShard - 1) / perShard
	finish := make(chan struct{})
	go func() { // the server says when the idle time is over
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			if sc.Text() == "finish" {
				break
			}
		}
		close(finish)
	}()
	echoed := make(chan int, shards)
	results := make(chan *load, shards)
	for k := range shards {
		l := cfg
		l.base = k * perShard
		l.n = min(perShard, cfg.n-l.base)
		l.every = cfg.every * time.Duration(shards) // the same ping rate in all
		l.window = max(cfg.window/shards, 1)        // and the same load
		go l.run(shards > 1, finish, echoed, results, uint64(k))
	}
	connErrors := 0
	for range shards {
		connErrors += <-echoed
	}
	fmt.Printf("echoed connected=%d errors=%d shards=%d\n", cfg.n-connErrors, connErrors, shards)
	var rtts, idle []time.Duration
	errs := 0
	for range shards {
		l := <-results
		errs += l.errors
		rtts = append(rtts, l.rtts...)
		idle = append(idle, l.idle...)
	}
	slices.Sort(rtts)
	slices.Sort(idle)
	fmt.Printf("done errors=%d pings=%d rtt_p50_us=%d rtt_p99_us=%d rtt_max_us=%d idle_pings=%d idle_rtt_p50_us=%d idle_rtt_p99_us=%d client_rss_kb=%d\n",
		errs, len(rtts), percentile(rtts, 0.50), percentile(rtts, 0.99), percentile(rtts, 1),
		len(idle), percentile(idle, 0.50), percentile(idle, 0.99), procKB("/proc/self/status", "VmRSS:"))
	return 0
}

// run is one shard of the client: it connects its connections, echoes on
// each, pings until finish, echoes again, and closes them. With own, it
// runs on a thread with an fd table of its own, which ends with it.
func (l *load) run(own bool, finish chan struct{}, echoed chan<- int, results chan<- *load, seed uint64) {
	runtime.LockOSThread() // never unlocked: with own, the thread dies with its table
	l.inflight = map[int32]*request{}
	l.rng = rand.New(rand.NewPCG(seed, 2))
	l.events = make([]unix.EpollEvent, 1024)
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "conns client: shard at %d: %s: %v\n", l.base, what, err)
		l.errors = l.n
		echoed <- l.n
		results <- l
	}
	if own {
		if err := unix.Unshare(unix.CLONE_FILES); err != nil {
			fail("unshare(CLONE_FILES)", err)
			return
		}
	}
	var err error
	if l.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		fail("epoll_create1", err)
		return
	}
	l.connectAll()
	l.echoAll(1)
	echoed <- l.errors
	idleFrom := len(l.rtts)
	for !isClosed(finish) || l.pinging {
		l.maybePing()
		l.wait(time.Millisecond)
	}
	l.idle = append([]time.Duration(nil), l.rtts[idleFrom:]...)
	l.echoAll(2)
	l.closeAll()
	unix.Close(l.epfd)
	results <- l
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func percentile(sorted []time.Duration, q float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	i := min(int(q*float64(len(sorted))), len(sorted)-1)
	return sorted[i].Microseconds()
}

// fail counts an error on connection i and closes it.
func (l *load) fail(i int32, why string, err error) {
	l.errors++
	if l.errors <= 10 {
		fmt.Fprintf(os.Stderr, "conns client: connection %d: %s: %v\n", l.base+int(i), why, err)
	}
	if fd := l.fds[i]; fd >= 0 {
		unix.Close(int(fd))
		l.fds[i] = -1
	}
	if r := l.inflight[i]; r != nil {
		delete(l.inflight, i)
		if r.ping {
			l.pinging = false
		}
	}
}

// source is the address connection i binds to: 127.a.b.1, a new one
// every perSourceAddr connections.
func source(i int) *unix.SockaddrInet4 {
	k := i / perSourceAddr
	return &unix.SockaddrInet4{Addr: [4]byte{127, byte(1 + k/250), byte(1 + k%250), 1}}
}

// connectAll opens n connections, window at a time.
func (l *load) connectAll() {
	l.fds = make([]int32, l.n)
	l.progress = time.Now()
	pending := 0
	for i := 0; i < l.n || pending > 0; {
		for ; i < l.n && pending < l.window; i++ {
			if l.connect(int32(i)) {
				pending++
			}
		}
		pending -= l.waitConnects()
		if time.Since(l.progress) > l.timeout {
			for j := range i {
				if l.fds[j] >= 0 && l.connecting(int32(j)) {
					l.fail(int32(j), "connect", fmt.Errorf("no answer in %v", l.timeout))
					pending--
				}
			}
		}
	}
}

// connecting reports whether connection i is still waiting for its
// connect; l.inflight marks it (with a nil-want request).
func (l *load) connecting(i int32) bool {
	r := l.inflight[i]
	return r != nil && r.want == nil
}

// connect starts connection i; it reports whether it is pending.
func (l *load) connect(i int32) bool {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		l.fds[i] = -1
		l.fail(i, "socket", err)
		return false
	}
	l.fds[i] = int32(fd)
	// The port is chosen at connect, for the 4-tuple, not at bind.
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if err := unix.Bind(fd, source(l.base+int(i))); err != nil {
		l.fail(i, "bind", err)
		return false
	}
	err = unix.Connect(fd, &l.dst)
	if err != nil && err != unix.EINPROGRESS {
		l.fail(i, "connect", err)
		return false
	}
	ev := unix.EpollEvent{Events: unix.EPOLLOUT | unix.EPOLLONESHOT, Fd: i}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		l.fail(i, "epoll_ctl", err)
		return false
	}
	l.inflight[i] = &request{conn: i}
	return true
}

// waitConnects handles connect completions and returns how many ended.
func (l *load) waitConnects() int {
	n, err := unix.EpollWait(l.epfd, l.events, 100)
	if err != nil && err != unix.EINTR {
		fmt.Fprintln(os.Stderr, "conns client: epoll_wait:", err)
		os.Exit(1)
	}
	ended := 0
	for _, ev := range l.events[:max(n, 0)] {
		i := ev.Fd
		if !l.connecting(i) {
			continue
		}
		ended++
		delete(l.inflight, i)
		fd := int(l.fds[i])
		soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err == nil && soerr != 0 {
			err = unix.Errno(soerr)
		}
		if err == nil {
			in := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: i}
			err = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, fd, &in)
		}
		if err != nil {
			l.fail(i, "connect", err)
			continue
		}
		l.progress = time.Now()
	}
	return ended
}

// message is what connection i sends in phase: its index, the phase and
// a pattern, so that a byte from another connection or phase shows.
func (l *load) message(i int32, phase uint32) []byte {
	b := make([]byte, l.size)
	g := uint32(l.base) + uint32(i)
	binary.LittleEndian.PutUint32(b, g)
	binary.LittleEndian.PutUint32(b[4:], phase)
	for j := 8; j < len(b); j++ {
		b[j] = byte(g*31 + uint32(j)*7 + phase)
	}
	return b
}

// send starts a request on connection i.
func (l *load) send(i int32, msg []byte, ping bool) {
	n, err := unix.Write(int(l.fds[i]), msg)
	if err == nil && n < len(msg) {
		err = fmt.Errorf("short write %d of %d", n, len(msg))
	}
	if err != nil {
		l.fail(i, "write", err)
		return
	}
	l.inflight[i] = &request{conn: i, want: msg, got: make([]byte, 0, len(msg)), sent: time.Now(), ping: ping}
	if ping {
		l.pinging = true
	}
}

// echoAll echoes a message on every live connection, window at a time,
// pinging all along.
func (l *load) echoAll(phase uint32) {
	l.progress = time.Now()
	for i := 0; i < l.n || len(l.inflight) > 0; {
		for ; i < l.n && len(l.inflight) < l.window; i++ {
			if l.fds[i] >= 0 && l.inflight[int32(i)] == nil {
				l.send(int32(i), l.message(int32(i), phase), false)
			}
		}
		l.maybePing()
		l.wait(time.Millisecond)
	}
}

// maybePing pings a random idle connection when the last ping is back and
// the next is due.
func (l *load) maybePing() {
	if l.pinging || time.Now().Before(l.nextPing) {
		return
	}
	for range 16 { // a live connection with nothing in flight
		i := int32(l.rng.IntN(l.n))
		if l.fds[i] >= 0 && l.inflight[i] == nil {
			l.nextPing = time.Now().Add(l.every)
			l.send(i, l.message(i, 0xfffffff0+uint32(len(l.rtts))%8), true)
			return
		}
	}
}

// wait handles the events of up to timeout and fails the requests that
// have made no progress for l.timeout.
func (l *load) wait(timeout time.Duration) {
	n, err := unix.EpollWait(l.epfd, l.events, int(timeout.Milliseconds()))
	if err != nil && err != unix.EINTR {
		fmt.Fprintln(os.Stderr, "conns client: epoll_wait:", err)
		os.Exit(1)
	}
	for _, ev := range l.events[:max(n, 0)] {
		l.readable(ev.Fd)
	}
	if len(l.inflight) > 0 && time.Since(l.progress) > l.timeout {
		for i := range l.inflight {
			l.fail(i, "echo", fmt.Errorf("no answer in %v", l.timeout))
		}
	}
}

// readable reads what connection i has: the rest of its request's echo,
// or, on a connection with nothing in flight, an error.
func (l *load) readable(i int32) {
	fd := l.fds[i]
	if fd < 0 {
		return
	}
	r := l.inflight[i]
	if r == nil {
		var b [64]byte
		n, err := unix.Read(int(fd), b[:])
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
		case err != nil:
			l.fail(i, "idle connection", err)
		case n == 0:
			l.fail(i, "idle connection", fmt.Errorf("closed by the server"))
		default:
			l.fail(i, "idle connection", fmt.Errorf("%d unexpected bytes", n))
		}
		return
	}
	n, err := unix.Read(int(fd), r.got[len(r.got):cap(r.got)])
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return
	case err != nil:
		l.fail(i, "read", err)
		return
	case n == 0:
		l.fail(i, "read", fmt.Errorf("closed by the server after %d of %d bytes", len(r.got), len(r.want)))
		return
	}
	r.got = r.got[:len(r.got)+n]
	if len(r.got) < len(r.want) {
		return
	}
	delete(l.inflight, i)
	l.progress = time.Now()
	if !bytes.Equal(r.got, r.want) {
		l.fail(i, "echo", fmt.Errorf("wrong bytes: got %x, want %x", r.got, r.want))
		return
	}
	if r.ping {
		l.pinging = false
		l.rtts = append(l.rtts, time.Since(r.sent))
	}
}

// closeAll resets every connection (SO_LINGER 0: no TIME_WAIT left behind
// to distort the next run's kernel memory).
func (l *load) closeAll() {
	for i, fd := range l.fds {
		if fd >= 0 {
			_ = unix.SetsockoptLinger(int(fd), unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
			unix.Close(int(fd))
			l.fds[i] = -1
		}
	}
}
