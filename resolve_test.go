//go:build linux

package iopool

import (
	"context"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Dial and Listen take host and service names ("localhost" comes from
// /etc/hosts, no DNS server needed).
func TestDialAndListenResolveNames(t *testing.T) {
	runPool(t, func(tk *Task) error {
		l, err := tk.Driver().Listen("tcp", "localhost:0")
		require.NoError(t, err)
		defer l.Close()
		port := l.Addr().(*net.TCPAddr).Port
		require.True(t, l.Addr().(*net.TCPAddr).IP.IsLoopback(), "%v", l.Addr())
		accepted := Spawn(tk.Driver(), "accept", func(t *Task) (struct{}, error) {
			s, err := l.Accept(t)
			if err == nil {
				s.Close()
			}
			return struct{}{}, err
		})
		s, err := Dial(tk, "tcp", net.JoinHostPort("localhost", strconv.Itoa(port)))
		require.NoError(t, err)
		s.Close()
		_, err = accepted.Join(tk)
		require.NoError(t, err)

		_, err = Dial(tk, "tcp", "localhost:no-such-service")
		require.ErrorContains(t, err, "dial tcp: lookup tcp/no-such-service")
		_, err = Dial(tk, "sctp", "localhost:1")
		require.ErrorContains(t, err, `unsupported network "sctp" (want tcp, tcp4, tcp6 or unix)`)
		_, err = Dial(tk, "tcp", "no-port")
		require.ErrorContains(t, err, "missing port in address")
		return nil
	})
}

// A lookup waiting on a DNS server that never answers does not block the
// pool (another task keeps ticking), whether Dial or ListenPacket (from a
// task) waits for it, and canceling the task ends the call at once and
// cancels the lookup.
func TestDialResolvesOffTheLoopAndCancels(t *testing.T) {
	lookupCanceled := make(chan struct{})
	var once sync.Once
	old := resolver
	resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		<-ctx.Done() // a DNS server that never answers
		once.Do(func() { close(lookupCanceled) })
		return nil, ctx.Err()
	}}
	defer func() { resolver = old }()

	runPool(t, func(tk *Task) error {
		dialing := Spawn(tk.Driver(), "dial", func(t *Task) (*Socket, error) {
			return Dial(t, "tcp", "never.answers.invalid:80")
		})
		// Listen called from a task resolves through that task too.
		listening := Spawn(tk.Driver(), "listen", func(t *Task) (*PacketSocket, error) {
			return t.Driver().ListenPacket("udp", "listen.never.answers.invalid:0")
		})
		ticks := 0
		for range 5 {
			require.NoError(t, tk.Sleep(2*time.Millisecond))
			ticks++
		}
		require.Equal(t, 5, ticks, "the loop kept running while the name was looked up")
		_, done, _ := dialing.Result()
		require.False(t, done)
		start := time.Now()
		dialing.Cancel()
		listening.Cancel()
		_, err := dialing.Join(tk)
		require.ErrorIs(t, err, ErrCanceled)
		_, err = listening.Join(tk)
		require.ErrorIs(t, err, ErrCanceled)
		require.Less(t, time.Since(start), time.Second)
		return nil
	})
	select {
	case <-lookupCanceled:
	case <-time.After(5 * time.Second):
		t.Fatal("the lookup's context was not canceled with the task")
	}
}
