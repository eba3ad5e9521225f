//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDemoPrintsTheConversation(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), nil, &out), out.String())
	for _, want := range []string{
		"< hello, pool\n",
		"< QUIET PLEASE\n",
		"< tasks ",
		"< ERR unknown command \"FROB\"\n",
		"< BYE\n",
		"< ERR line too long (more than 4096 bytes)\n",
	} {
		require.Contains(t, out.String(), want)
	}
}

// startTestServer serves a socket in a temporary directory for one test.
func startTestServer(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "line.sock")
	srv, err := startServer(path)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, srv.shutdown()) })
	return path
}

func dial(t *testing.T, path string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	return c, bufio.NewReader(c)
}

func TestEveryCommand(t *testing.T) {
	path := startTestServer(t)
	c, r := dial(t, path)
	// Pipelined: all commands in one write, replies in order.
	_, err := fmt.Fprint(c, "ECHO a b  c\nupper MiXed\nTIME\nSTATS\n\nNOPE x\nECHO\nQUIT\nECHO never\n")
	require.NoError(t, err)
	want := []func(string){
		func(s string) { require.Equal(t, "a b  c", s) },
		func(s string) { require.Equal(t, "MIXED", s) },
		func(s string) {
			ts, err := time.Parse(time.RFC3339Nano, s)
			require.NoError(t, err)
			require.WithinDuration(t, time.Now(), ts, time.Minute)
		},
		func(s string) { require.Regexp(t, `^tasks \d+, fds \d+, loop cycles \d+, sleeps \d+$`, s) },
		func(s string) { require.Equal(t, "ERR empty line", s) },
		func(s string) { require.Equal(t, `ERR unknown command "NOPE"`, s) },
		func(s string) { require.Equal(t, "", s) },
		func(s string) { require.Equal(t, "BYE", s) },
	}
	for i, check := range want {
		line, err := r.ReadString('\n')
		require.NoError(t, err, "reply %d", i)
		check(strings.TrimSuffix(line, "\n"))
	}
	_, err = r.ReadByte()
	require.ErrorIs(t, err, io.EOF, "QUIT closes the connection; the command after it is not answered")
}

func TestManyClientsAtOnce(t *testing.T) {
	path := startTestServer(t)
	errs := make(chan error, 20)
	for i := range 20 {
		go func() {
			c, err := net.DialTimeout("unix", path, 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			r := bufio.NewReader(c)
			for j := range 50 {
				fmt.Fprintf(c, "ECHO %d-%d\n", i, j)
				line, err := r.ReadString('\n')
				if err != nil {
					errs <- err
					return
				}
				if want := fmt.Sprintf("%d-%d\n", i, j); line != want {
					errs <- fmt.Errorf("got %q, want %q", line, want)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 20 {
		require.NoError(t, <-errs)
	}
}

func TestLineTooLongClosesTheConnection(t *testing.T) {
	path := startTestServer(t)
	c, r := dial(t, path)
	_, err := fmt.Fprintf(c, "ECHO %s\n", strings.Repeat("y", maxLine))
	require.NoError(t, err)
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ERR line too long (more than 4096 bytes)\n", line)
	_, err = r.ReadByte()
	require.Error(t, err, "the connection is closed")

	// A line of exactly maxLine bytes is accepted.
	c2, r2 := dial(t, path)
	exact := "ECHO " + strings.Repeat("z", maxLine-len("ECHO "))
	_, err = fmt.Fprintf(c2, "%s\n", exact)
	require.NoError(t, err)
	line, err = r2.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, exact[len("ECHO "):]+"\n", line)
}

func TestBadFlagsAndTakenPath(t *testing.T) {
	for _, args := range [][]string{{"-nope"}, {"extra"}} {
		var out bytes.Buffer
		err := run(context.Background(), args, &out)
		require.ErrorIs(t, err, flag.ErrHelp, "%v", args)
		require.Contains(t, out.String(), "Usage", "%v", args)
	}
	path := startTestServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := run(ctx, []string{"-listen", path}, &bytes.Buffer{})
	require.ErrorContains(t, err, path)
	require.ErrorContains(t, err, "address already in use")
}

func TestListenServesUntilCanceled(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serve.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-listen", path}, &bytes.Buffer{}) }()
	var c net.Conn
	require.Eventually(t, func() bool {
		var err error
		c, err = net.Dial("unix", path)
		return err == nil
	}, 5*time.Second, 5*time.Millisecond)
	defer c.Close()
	fmt.Fprint(c, "UPPER ok\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "OK\n", line)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after the context was canceled")
	}
	_, err = net.Dial("unix", path)
	require.Error(t, err, "the socket file is removed")
}

// A client that sends an over-long line reads the ERR reply and then a
// clean EOF: the server stops writing, drains what the client sent, and
// only then closes. Before, it closed with the rest of the line unread,
// and the kernel reset the connection (ECONNRESET instead of EOF).
func TestRegressionLineTooLongEndsWithEOFNotReset(t *testing.T) {
	path := startTestServer(t)
	for range 5 {
		c, r := dial(t, path)
		sent := make(chan error, 1)
		go func() {
			_, err := fmt.Fprintf(c, "ECHO %s\n", strings.Repeat("y", 3*maxLine))
			sent <- err
		}()
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, "ERR line too long (more than 4096 bytes)\n", line)
		_, err = r.ReadByte()
		require.ErrorIs(t, err, io.EOF, "a clean close after the ERR reply")
		require.NoError(t, <-sent, "the client's whole line was taken")
	}
}

// A socket file left by a server that died (connections refused) is
// replaced; before, the next start failed with "address already in use".
func TestRegressionStaleSocketFileIsReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stale.sock")
	l, err := net.Listen("unix", path)
	require.NoError(t, err)
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	require.NoError(t, l.Close()) // the file stays and refuses connections
	srv, err := startServer(path)
	require.NoError(t, err)
	c, r := dial(t, path)
	fmt.Fprint(c, "ECHO fresh\n")
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "fresh\n", line)
	require.NoError(t, srv.shutdown())

	// A regular file at the path is not removed.
	require.NoError(t, os.WriteFile(path, []byte("data"), 0o600))
	_, err = startServer(path)
	require.ErrorContains(t, err, "address already in use")
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "data", string(b))
}

// SIGTERM ends a -listen server like Ctrl-C: run returns and the socket
// file is removed.
func TestListenStopsOnSIGTERM(t *testing.T) {
	ctx, stop := signal.NotifyContext(context.Background(), shutdownSignals...)
	defer stop()
	path := filepath.Join(t.TempDir(), "term.sock")
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-listen", path}, &bytes.Buffer{}) }()
	require.Eventually(t, func() bool {
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGTERM))
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after SIGTERM")
	}
	_, err := os.Lstat(path)
	require.ErrorIs(t, err, os.ErrNotExist, "the socket file is removed")
}
