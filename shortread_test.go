//go:build linux

package iopool

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/iopool/iopool/internal/sys"
)

// readsTwoChunks is the scenario of every fd kind below: queue sends two
// chunks (a line, a message, the data on either side of a boundary) that the
// kernel returns in two reads, both queued before the first read. After the
// first (short) read, the second must come back at once: no new edge will
// come for data already queued. It fails with a deadline if Read treated the
// short read as "drained".
func readsTwoChunks(t *testing.T, tk *Task, s *Socket, queue func()) (first, second []byte) {
	t.Helper()
	queue()
	// Let the loop harvest and dispatch every edge of the queued data, so
	// that none is left to wake the second read.
	require.NoError(t, tk.Sleep(20*time.Millisecond))
	buf := make([]byte, 4096)
	n, err := s.Read(tk, buf)
	require.NoError(t, err, "first read")
	first = append([]byte(nil), buf[:n]...)
	require.NoError(t, s.SetReadDeadline(time.Now().Add(2*time.Second)))
	n, err = s.Read(tk, buf)
	require.NoError(t, err, "second read: data already queued after a short read was stranded")
	second = append([]byte(nil), buf[:n]...)
	return first, second
}

// Regression: Socket.Read treated every short read as "the receive queue is
// empty" and waited for a new edge. A read is also short at a TCP urgent
// mark, on a terminal in canonical mode, on seqpacket and datagram sockets,
// on a tun device and at an SCM_RIGHTS boundary of a unix stream: the data
// after it was stranded. Only a TCP stream without urgent data keeps the
// shortcut; every other fd reads until EAGAIN.
func TestRegressionShortReadNeverStrandsData(t *testing.T) {
	t.Run("tcp-urgent-mark", func(t *testing.T) {
		runPool(t, func(tk *Task) error {
			l, err := tk.Driver().Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			defer l.Close()
			c, err := Dial(tk, "tcp", l.Addr().String())
			require.NoError(t, err)
			defer c.Close()
			s, err := l.Accept(tk)
			require.NoError(t, err)
			defer s.Close()
			require.True(t, s.read.tcp)
			first, second := readsTwoChunks(t, tk, s, func() {
				require.NoError(t, unix.Send(c.Fd(), []byte("abc"), 0))
				require.NoError(t, unix.Send(c.Fd(), []byte("!"), unix.MSG_OOB))
				require.NoError(t, unix.Send(c.Fd(), []byte("def"), 0))
			})
			require.Equal(t, "abc", string(first), "a read stops at the urgent mark")
			require.Equal(t, "def", string(second))
			return nil
		})
	})
	t.Run("pty-canonical", func(t *testing.T) {
		master, slave := openPty(t)
		defer unix.Close(master)
		runPool(t, func(tk *Task) error {
			s, err := tk.Driver().NewSocket(slave)
			require.NoError(t, err)
			defer s.Close()
			require.False(t, s.read.tcp)
			first, second := readsTwoChunks(t, tk, s, func() {
				_, err := unix.Write(master, []byte("one\ntwo\n"))
				require.NoError(t, err)
			})
			require.Equal(t, "one\n", string(first), "canonical mode reads a line at a time")
			require.Equal(t, "two\n", string(second))
			return nil
		})
	})
	for _, kind := range []struct {
		name string
		typ  int
	}{{"seqpacket", unix.SOCK_SEQPACKET}, {"datagram", unix.SOCK_DGRAM}} {
		t.Run(kind.name, func(t *testing.T) {
			fds, err := unix.Socketpair(unix.AF_UNIX, kind.typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			require.NoError(t, err)
			defer unix.Close(fds[1])
			runPool(t, func(tk *Task) error {
				s, err := tk.Driver().NewSocket(fds[0])
				require.NoError(t, err)
				defer s.Close()
				require.False(t, s.read.tcp)
				first, second := readsTwoChunks(t, tk, s, func() {
					for _, m := range []string{"one", "two"} {
						_, err := unix.Write(fds[1], []byte(m))
						require.NoError(t, err)
					}
				})
				require.Equal(t, "one", string(first), "a message per read")
				require.Equal(t, "two", string(second))
				return nil
			})
		})
	}
	t.Run("unix-stream-scm-rights", func(t *testing.T) {
		sp := socketpair(t)
		defer unix.Close(sp[1])
		var pipe [2]int
		require.NoError(t, unix.Pipe2(pipe[:], unix.O_CLOEXEC))
		defer unix.Close(pipe[0])
		defer unix.Close(pipe[1])
		runPool(t, func(tk *Task) error {
			s, err := tk.Driver().NewSocket(sp[0])
			require.NoError(t, err)
			defer s.Close()
			require.False(t, s.read.tcp)
			first, second := readsTwoChunks(t, tk, s, func() {
				require.NoError(t, unix.Sendmsg(sp[1], []byte("abc"), unix.UnixRights(pipe[0]), nil, 0))
				_, err := unix.Write(sp[1], []byte("def"))
				require.NoError(t, err)
			})
			// A read without room for the fds drops them (the kernel closes
			// its copy) and stops after their message.
			require.Equal(t, "abc", string(first))
			require.Equal(t, "def", string(second))
			return nil
		})
	})
	t.Run("tun", func(t *testing.T) {
		tun, sendTwo, done := openTun(t)
		defer done()
		runPool(t, func(tk *Task) error {
			s, err := tk.Driver().NewSocket(tun)
			require.NoError(t, err)
			defer s.Close()
			require.False(t, s.read.tcp)
			first, second := readsTwoChunks(t, tk, s, sendTwo)
			// IPv4 and UDP headers, then the payload: a packet per read.
			require.Equal(t, "one", string(first[len(first)-3:]), "%x", first)
			require.Equal(t, "two", string(second[len(second)-3:]), "%x", second)
			return nil
		})
	})
}

// The shortcut kept: on a TCP stream a short read is the end of the data,
// and the next Read waits for a new edge without a read that would fail
// with EAGAIN. (A unix stream pays that read.)
func TestTCPShortReadWaitsWithoutAnotherSyscall(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			fs := new(sys.Faults)
			runPool(t, func(tk *Task) error {
				addr := "127.0.0.1:0"
				if network == "unix" {
					addr = t.TempDir() + "/s.sock"
				}
				l, err := tk.Driver().Listen(network, addr)
				require.NoError(t, err)
				defer l.Close()
				c, err := Dial(tk, network, l.Addr().String())
				require.NoError(t, err)
				defer c.Close()
				s, err := l.Accept(tk)
				require.NoError(t, err)
				defer s.Close()
				_, err = c.Write(tk, []byte("ping"))
				require.NoError(t, err)
				// The data's edge recorded first: a new socket's first
				// Read tries without it, and an edge the loop harvests
				// after that read has found nothing left to report.
				require.NoError(t, s.WaitReadable(tk))
				buf := make([]byte, 64)
				n, err := s.Read(tk, buf)
				require.NoError(t, err)
				require.Equal(t, "ping", string(buf[:n]))

				var reads atomic.Int32
				old := fs.Set(func(c sys.Call) error {
					if c == sys.CallRead {
						reads.Add(1)
					}
					return nil
				})
				defer func() { fs.Set(old) }()
				require.NoError(t, s.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
				_, err = s.Read(tk, buf)
				require.ErrorIs(t, err, os.ErrDeadlineExceeded)
				if network == "tcp" {
					require.Zero(t, reads.Load(), "a read after a short TCP read")
				} else {
					require.Equal(t, int32(1), reads.Load(), "a unix stream reads until EAGAIN")
				}
				return nil
			}, withFaults(fs))
		})
	}
}

// openPty opens a pseudo-terminal pair through /dev/ptmx; the slave is in
// the default canonical mode.
func openPty(t *testing.T) (master, slave int) {
	t.Helper()
	master, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EACCES) {
		t.Skipf("no pseudo-terminals here: open /dev/ptmx: %v", err)
	}
	require.NoError(t, err)
	require.NoError(t, unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0)) // unlockpt
	n, err := unix.IoctlGetUint32(master, unix.TIOCGPTN)                    // ptsname
	require.NoError(t, err)
	slave, err = unix.Open(fmt.Sprintf("/dev/pts/%d", n), unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	return master, slave
}

// openTun creates a tun device in a network namespace of its own (so the
// machine's network is untouched) and returns its fd, a function that
// sends two UDP datagrams routed into it, and a function that ends the
// namespace. It skips the test where the kernel or the privileges refuse.
//
// A network namespace belongs to a thread: the setup runs on a goroutine
// locked to its thread, which stays until done and then exits without
// unlocking, so the thread (and the namespace with it) ends.
func openTun(t *testing.T) (fd int, sendTwo func(), done func()) {
	t.Helper()
	type setup struct {
		fd, udp int
		err     error
		skip    string
	}
	ready := make(chan setup, 1)
	send := make(chan struct{})
	sent := make(chan error, 1)
	finish := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		runtime.LockOSThread() // never unlocked: the thread ends with the namespace
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ready <- setup{skip: fmt.Sprintf("cannot create a network namespace for a tun device: unshare: %v", err)}
			return
		}
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			ready <- setup{skip: fmt.Sprintf("no tun device here: open /dev/net/tun: %v", err)}
			return
		}
		s := setup{fd: fd, udp: -1}
		s.err = configureTun(fd, &s.udp)
		ready <- s
		if s.err != nil {
			return
		}
		<-send
		var err2 error
		for _, payload := range []string{"one", "two"} {
			if err2 = unix.Sendto(s.udp, []byte(payload), 0, &unix.SockaddrInet4{Port: 9, Addr: [4]byte{10, 213, 7, 2}}); err2 != nil {
				break
			}
		}
		sent <- err2
		<-finish
		unix.Close(s.udp)
	}()
	s := <-ready
	if s.skip != "" {
		<-exited
		t.Skip(s.skip)
	}
	if s.err != nil {
		unix.Close(s.fd)
		close(finish)
		<-exited
		require.NoError(t, s.err)
	}
	return s.fd, func() {
			close(send)
			require.NoError(t, <-sent)
		}, func() {
			close(finish)
			<-exited
		}
}

// configureTun names the tun device, gives it 10.213.7.1/24 and brings it
// up without IPv6; *udp gets a UDP socket of the namespace to send through
// it. It runs on the namespace's thread (/proc/sys/net is that thread's).
func configureTun(fd int, udp *int) error {
	ifr, err := unix.NewIfreq("iopooltun0")
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("TUNSETIFF: %w", err)
	}
	sock, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	*udp = sock
	addr, _ := unix.NewIfreq("iopooltun0")
	if err := addr.SetInet4Addr([]byte{10, 213, 7, 1}); err != nil {
		return err
	}
	if err := unix.IoctlIfreq(sock, unix.SIOCSIFADDR, addr); err != nil {
		return fmt.Errorf("SIOCSIFADDR: %w", err)
	}
	mask, _ := unix.NewIfreq("iopooltun0")
	if err := mask.SetInet4Addr([]byte{255, 255, 255, 0}); err != nil {
		return err
	}
	if err := unix.IoctlIfreq(sock, unix.SIOCSIFNETMASK, mask); err != nil {
		return fmt.Errorf("SIOCSIFNETMASK: %w", err)
	}
	// No IPv6 on it: the kernel would send its own packets (router
	// solicitations, MLD reports) through the device at random moments.
	// Where the kernel has no IPv6 the file is missing, which is fine.
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/iopooltun0/disable_ipv6", []byte("1"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("disabling IPv6 on the tun device: %w", err)
	}
	flags, _ := unix.NewIfreq("iopooltun0")
	flags.SetUint16(unix.IFF_UP | unix.IFF_RUNNING)
	if err := unix.IoctlIfreq(sock, unix.SIOCSIFFLAGS, flags); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS: %w", err)
	}
	return nil
}
