//go:build linux

// Command unixline serves a line protocol over a unix socket on an iopool
// pool, one task per connection, with bufio reading and writing inside the
// tasks. With no flags it serves a socket in a temporary directory, talks to
// it with a built-in client (plain goroutines using package net) and prints
// the conversation:
//
//	go run ./examples/unixline
//	go run ./examples/unixline -listen /tmp/line.sock   # serve until Ctrl-C or SIGTERM
//
// and then, for the second form, from another terminal:
//
//	printf 'ECHO hi\nUPPER hi\nTIME\nSTATS\nQUIT\n' | nc -U /tmp/line.sock
//
// The protocol is one command per line: ECHO text, UPPER text, TIME, STATS
// and QUIT. An unknown command gets "ERR unknown command", and a line longer
// than 4 KiB gets "ERR line too long" and closes the connection (cleanly: the
// client reads EOF after the reply). A socket file left behind by a killed
// server is removed before listening; one that a live server answers on is
// not.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/iopool/iopool"
)

// maxLine is the longest line the server reads, without its newline.
const maxLine = 4096

// shutdownSignals end a -listen server cleanly (socket file removed): Ctrl-C
// and the SIGTERM of kill, systemd and container runtimes.
var shutdownSignals = []os.Signal{os.Interrupt, syscall.SIGTERM}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), shutdownSignals...)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "unixline:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("unixline", flag.ContinueOnError)
	fs.SetOutput(out)
	listen := fs.String("listen", "", "serve only, on this unix socket path, until interrupted")
	if err := fs.Parse(args); err != nil {
		return flag.ErrHelp // the flag package printed the problem and the usage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(out, "unixline: unexpected arguments %q\n", fs.Args())
		fs.Usage()
		return flag.ErrHelp
	}

	path := *listen
	if path == "" {
		dir, err := os.MkdirTemp("", "unixline")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		path = filepath.Join(dir, "line.sock")
	}
	srv, err := startServer(path)
	if err != nil {
		return err
	}
	defer srv.shutdown()
	fmt.Fprintf(out, "serving the line protocol on %s\n", path)
	if *listen != "" {
		<-ctx.Done()
		return srv.shutdown()
	}
	if err := demo(path, out); err != nil {
		return err
	}
	return srv.shutdown()
}

// server is a pool whose root task accepts connections until stop fires.
type server struct {
	pool *iopool.Pool
	path string
	stop *iopool.Oneshot[struct{}]
	done chan error
}

// startServer listens on path and serves it on a new pool's goroutine. The
// listener is created before it returns, so a taken path fails here.
func startServer(path string) (*server, error) {
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	p, err := iopool.New()
	if err != nil {
		return nil, err
	}
	s := &server{pool: p, path: path, stop: iopool.NewOneshot[struct{}](), done: make(chan error, 1)}
	listening := make(chan error, 1)
	go func() {
		s.done <- p.Run(func(t *iopool.Task) error {
			l, err := t.Driver().Listen("unix", path)
			listening <- err
			if err != nil {
				return nil // reported by startServer
			}
			acceptor := iopool.Spawn(t.Driver(), "accept", func(t *iopool.Task) (struct{}, error) {
				for {
					c, err := l.Accept(t)
					if err != nil {
						return struct{}{}, err
					}
					iopool.Spawn(t.Driver(), "conn", func(t *iopool.Task) (struct{}, error) {
						defer c.Close()
						return struct{}{}, serveConn(t, c)
					})
				}
			})
			_, err = s.stop.Recv(t)
			acceptor.Cancel()
			_, _ = acceptor.Join(t)
			l.Close()
			return err
		})
	}()
	if err := <-listening; err != nil {
		<-s.done
		p.Close()
		return nil, err
	}
	return s, nil
}

// removeStaleSocket removes a socket file left behind by a server that is
// gone (killed, crashed): connecting to it is refused. A socket that accepts
// connections belongs to a live server and is kept (listening then fails
// with "address already in use"), and a file that is not a socket is never
// touched.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		return nil
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return nil
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return os.Remove(path)
	}
	return nil
}

// shutdown stops accepting, closes the pool (which cancels the connection
// tasks and waits for them) and removes the socket file. Idempotent.
func (s *server) shutdown() error {
	if s.stop.Send(struct{}{}) != nil {
		return nil // already stopped
	}
	err := <-s.done
	if cerr := s.pool.Close(); err == nil {
		err = cerr
	}
	os.Remove(s.path)
	return err
}

// serveConn answers one connection's commands until QUIT, EOF or an error.
func serveConn(t *iopool.Task, c *iopool.Socket) error {
	r := bufio.NewReaderSize(c.Reader(t), maxLine+1)
	w := bufio.NewWriter(c.Writer(t))
	for {
		line, err := r.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			fmt.Fprintf(w, "ERR line too long (more than %d bytes)\n", maxLine)
			if err := w.Flush(); err != nil {
				return err
			}
			return closeAfterDraining(t, c)
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return err
		}
		reply, quit := answer(strings.TrimRight(string(line), "\r\n"), t)
		w.WriteString(reply)
		w.WriteByte('\n')
		// Flush only when no further command is buffered: a client that
		// pipelines its commands gets its replies in one write.
		if r.Buffered() == 0 || quit {
			if err := w.Flush(); err != nil {
				return err
			}
		}
		if quit {
			return nil
		}
	}
}

// Draining before a close: closing a socket with unread input makes the
// kernel reset the connection, and the client would read ECONNRESET, losing
// the ERR reply it had not read yet. So the server stops writing (the
// client reads EOF after the reply), then reads and drops what the client
// is still sending, up to drainLimit bytes or for drainTime, and only then
// closes.
const (
	drainLimit = 1 << 20
	drainTime  = time.Second
)

func closeAfterDraining(t *iopool.Task, c *iopool.Socket) error {
	if err := c.CloseWrite(); err != nil {
		return err
	}
	if err := c.SetReadDeadline(time.Now().Add(drainTime)); err != nil {
		return err
	}
	_, _ = io.CopyN(io.Discard, c.Reader(t), drainLimit) // until EOF, the limit or the deadline
	return nil
}

// answer is the protocol: the reply to one command line, and whether the
// connection ends after it.
func answer(line string, t *iopool.Task) (reply string, quit bool) {
	cmd, arg, _ := strings.Cut(line, " ")
	switch strings.ToUpper(cmd) {
	case "ECHO":
		return arg, false
	case "UPPER":
		return strings.ToUpper(arg), false
	case "TIME":
		return time.Now().Format(time.RFC3339Nano), false
	case "STATS":
		st := t.Driver().Pool().Stats()
		return fmt.Sprintf("tasks %d, fds %d, loop cycles %d, sleeps %d", st.TasksLive, st.FdsRegistered, st.Cycles, st.Sleeps), false
	case "QUIT":
		return "BYE", true
	case "":
		return "ERR empty line", false
	}
	return fmt.Sprintf("ERR unknown command %q", cmd), false
}

// demo talks to the server like a user would, from plain goroutines, and
// prints each command with its reply.
func demo(path string, out io.Writer) error {
	conn, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	for _, cmd := range []string{"ECHO hello, pool", "UPPER quiet please", "TIME", "STATS", "FROB", "QUIT"} {
		if _, err := fmt.Fprintf(conn, "%s\n", cmd); err != nil {
			return err
		}
		reply, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("reading the reply to %q: %w", cmd, err)
		}
		fmt.Fprintf(out, "> %-20s < %s", cmd, reply)
	}
	if _, err := r.ReadByte(); err != io.EOF {
		return fmt.Errorf("after QUIT the server should close the connection, got %v", err)
	}

	// A second client sends a line longer than the server accepts.
	long, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return err
	}
	defer long.Close()
	long.SetDeadline(time.Now().Add(10 * time.Second))
	go fmt.Fprintf(long, "ECHO %s\n", strings.Repeat("x", 2*maxLine))
	reply, err := bufio.NewReader(long).ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading the reply to a long line: %w", err)
	}
	fmt.Fprintf(out, "> %-20s < %s", fmt.Sprintf("ECHO <%d bytes>", 2*maxLine), reply)
	return nil
}
