//go:build linux

package iopool

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A started pool serves goroutine code (net/http over its NetListener) and
// tasks spawned from any goroutine, with no root task; Close stops the loop
// goroutine and waits for it.
func TestStartServesNetHTTPWithoutARootTask(t *testing.T) {
	for _, locked := range []bool{false, true} {
		t.Run(fmt.Sprintf("locked=%v", locked), func(t *testing.T) {
			requireNoLeaks(t)
			var opts []Option
			if locked {
				opts = append(opts, WithLockOSThread())
			}
			p, err := New(opts...)
			require.NoError(t, err)
			require.NoError(t, p.Start())

			l, err := p.Driver().Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, "hello %s", r.URL.Path)
			}), ReadHeaderTimeout: 10 * time.Second}
			served := make(chan error, 1)
			go func() { served <- srv.Serve(l.NetListener()) }()

			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
			for i := range 3 {
				resp, err := client.Get(fmt.Sprintf("http://%s/%d", l.Addr(), i))
				require.NoError(t, err)
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				require.NoError(t, err)
				require.Equal(t, fmt.Sprintf("hello /%d", i), string(body))
			}
			client.CloseIdleConnections()

			// A task spawned from this goroutine runs on the started loop.
			h := Spawn(p.Driver(), "answer", func(t *Task) (int, error) {
				if err := t.Sleep(time.Millisecond); err != nil {
					return 0, err
				}
				return 42, nil
			})
			v, err := h.Wait()
			require.NoError(t, err)
			require.Equal(t, 42, v)

			require.NoError(t, srv.Close())
			require.ErrorIs(t, <-served, http.ErrServerClosed)
			require.NoError(t, p.Close())
			select {
			case <-p.loopExit:
			default:
				t.Fatal("Close returned before the loop goroutine exited")
			}
		})
	}
}

func TestStartMisuseGivesClearErrors(t *testing.T) {
	p := newTestPool(t)
	require.NoError(t, p.Start())
	err := p.Start()
	require.ErrorIs(t, err, ErrRunning)
	require.ErrorContains(t, err, "Start called twice")
	err = p.Run(func(*Task) error { return nil })
	require.ErrorIs(t, err, ErrRunning)
	require.ErrorContains(t, err, "started pool")

	// Start while Run is active.
	q := newTestPool(t)
	inRun, release := make(chan struct{}), NewOneshot[struct{}]()
	ran := make(chan error, 1)
	go func() {
		ran <- q.Run(func(tk *Task) error {
			close(inRun)
			_, err := release.Recv(tk)
			return err
		})
	}()
	<-inRun
	err = q.Start()
	require.ErrorIs(t, err, ErrRunning)
	require.ErrorContains(t, err, "while Run is active")
	require.NoError(t, release.Send(struct{}{}))
	require.NoError(t, <-ran)

	// After Close.
	r, err := New()
	require.NoError(t, err)
	require.NoError(t, r.Close())
	require.ErrorIs(t, r.Start(), ErrClosed)
}

// A task left running on a started pool is canceled by Close, which waits
// for it; a panic in a task reaches its Handle and the loop goes on.
func TestStartCloseCancelsTasksAndSurvivesPanics(t *testing.T) {
	p := newTestPool(t, WithLogger(slog.New(slog.DiscardHandler)))
	require.NoError(t, p.Start())
	boom := Spawn(p.Driver(), "boom", func(*Task) (int, error) { panic("boom") })
	_, err := boom.Wait()
	var pe *PanicError
	require.ErrorAs(t, err, &pe)

	forever := Spawn(p.Driver(), "forever", func(t *Task) (int, error) {
		return 0, t.Sleep(time.Hour)
	})
	require.NoError(t, p.Close())
	_, err = forever.Wait()
	require.ErrorIs(t, err, ErrCanceled)
}

// Regression (issue 19): goroutine code on a pool nobody runs hung silently
// (net/http's Accept parked forever, with no error and no log). What needs
// the loop now fails after the pool's not-running bound with ErrNotRunning,
// whose message says to call Start or Run: a BlockOn on a pool timer and a
// Handle.Wait. The net adapters do not need the loop (see
// TestNetAdaptersAreServedWithoutTheLoop).
func TestRegressionGoroutineOnPoolNotRunningFailsInsteadOfHanging(t *testing.T) {
	const bound = 100 * time.Millisecond
	p := newTestPool(t)
	p.opts.notRunningBound = bound // before any goroutine uses the pool

	waits := map[string]func() error{
		"BlockOn": func() error {
			_, err := BlockOn(p.Driver().NewTimer().Future(time.Now().Add(time.Hour)))
			return err
		},
		"Handle.Wait": func() error {
			_, err := Spawn(p.Driver(), "never-run", func(*Task) (int, error) { return 1, nil }).Wait()
			return err
		},
	}
	for name, wait := range waits {
		within(t, watchdog, func() {
			start := time.Now()
			err := wait()
			require.ErrorIs(t, err, ErrNotRunning, name)
			require.ErrorContains(t, err, "call Pool.Start (or Pool.Run)", name)
			require.GreaterOrEqual(t, time.Since(start), bound, "%s failed before the bound", name)
		})
	}
}

// A goroutine waiting on a pool that is started within the bound is served
// as if the pool had run all along; one waiting when the only Run returns
// fails after the bound.
func TestGoroutineIsServedWhenThePoolStartsWithinTheBound(t *testing.T) {
	p := newTestPool(t)
	p.opts.notRunningBound = time.Minute // the test never waits that long
	tm := p.Driver().NewTimer()
	fired := make(chan error, 1)
	go func() {
		_, err := BlockOn(tm.Future(time.Now().Add(20 * time.Millisecond)))
		fired <- err
	}()
	time.Sleep(10 * time.Millisecond) // usually parked by now; served either way
	require.NoError(t, p.Start())
	within(t, watchdog, func() { require.NoError(t, <-fired) })
}

func TestGoroutineFailsAfterTheLastRunReturns(t *testing.T) {
	const bound = 100 * time.Millisecond
	p := newTestPool(t)
	p.opts.notRunningBound = bound
	waited := make(chan error, 1)
	require.NoError(t, p.Run(func(tk *Task) error {
		tm := tk.Driver().NewTimer()
		go func() {
			_, err := BlockOn(tm.Future(time.Now().Add(time.Hour)))
			waited <- err
		}()
		return tk.Sleep(20 * time.Millisecond)
	}))
	within(t, watchdog, func() { require.ErrorIs(t, <-waited, ErrNotRunning) })
}

// A Group starts every pool; each serves a task spawned onto it.
func TestGroupStart(t *testing.T) {
	requireNoLeaks(t)
	g, err := NewGroup(2)
	require.NoError(t, err)
	defer g.Close()
	require.NoError(t, g.Start())
	require.ErrorIs(t, g.Start(), ErrRunning)
	for i := range g.Len() {
		v, err := Spawn(g.Driver(i), "where", func(t *Task) (string, error) {
			return t.Driver().Pool().Name(), nil
		}).Wait()
		require.NoError(t, err)
		require.True(t, strings.HasSuffix(v, fmt.Sprint("-", i)), v)
	}
	require.NoError(t, g.Close())
}
