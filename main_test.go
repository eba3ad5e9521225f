//go:build linux

package iopool

import (
	"fmt"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMain runs the package's tests under a lost-wake watchdog, so that a
// lost wake-up fails the run within seconds whichever test it hangs (with
// -run, -shuffle, or in a test that runs before the named wake tests of
// backend_epoll_test.go notice it), instead of at go test's timeout.
func TestMain(m *testing.M) {
	stop := startWakeWatchdog()
	code := m.Run()
	if code == 0 {
		stop() // after a failure, a pool left open by a failed test may be what hangs
	}
	os.Exit(code)
}

// parallelTests tracks the tests running now that called parallel, and the
// process's fds and goroutines when the first of them started.
var parallelTests struct {
	sync.Mutex
	running int // tests between parallel and their last cleanup
	fds, gs int // fds and goroutines when running last rose from zero
}

// parallelRunning reports whether a test that called parallel is running.
func parallelRunning() bool {
	parallelTests.Lock()
	defer parallelTests.Unlock()
	return parallelTests.running > 0
}

// parallel runs t in parallel with the other tests that call it
// (t.Parallel). Only tests that leave process-wide state alone may: no
// timing or CPU measurement, no counting of the process's fds, no fd
// number reuse (takeNumber), no rlimits, signals, GOMAXPROCS, environment
// or CPU pinning, no package variables set for the test.
//
// Go runs the parallel tests after every other top-level test has ended,
// so while one runs only such tests do, and the fd and goroutine counts of
// requireNoLeaks are not its own: it checks nothing then. The leak check
// is made here instead, for the parallel tests together: the counts taken
// when the first of them starts are compared by the last to end whenever
// none is left running (new ones wait for that check).
func parallel(t *testing.T) {
	t.Parallel()
	pt := &parallelTests
	pt.Lock()
	if pt.running == 0 {
		pt.fds, pt.gs = countFds(), testGoroutines()
	}
	pt.running++
	pt.Unlock()
	t.Cleanup(func() {
		pt.Lock()
		defer pt.Unlock()
		if pt.running--; pt.running > 0 {
			return
		}
		if n := countFds(); n > pt.fds {
			t.Errorf("the tests run in parallel up to this one left %d fds open, %d before:%s", n, pt.fds, fdNames())
		}
		for deadline := time.Now().Add(2 * time.Second); testGoroutines() > pt.gs && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		if n := testGoroutines(); n > pt.gs {
			buf := make([]byte, 1<<20)
			t.Errorf("the tests run in parallel up to this one left %d goroutines, %d before:\n%s", n, pt.gs, buf[:runtime.Stack(buf, true)])
		}
	})
}

// countFds is the number of fds open in the process, less those the Go
// runtime opens for itself when it likes (the cgroup CPU limit files it
// reads for GOMAXPROCS) and the directory read's own fd.
func countFds() int {
	ents, _ := os.ReadDir("/proc/self/fd")
	n := 0
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err == nil && !strings.HasPrefix(target, "/sys/fs/cgroup/") {
			n++
		}
	}
	return n
}

// fdNames lists the process's open fds and what each names.
func fdNames() string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var b strings.Builder
	for _, e := range ents {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		fmt.Fprintf(&b, " %s=%s", e.Name(), target)
	}
	return b.String()
}

// testGoroutines is runtime.NumGoroutine less os/signal's delivery
// goroutine, which the first signal.Notify starts for the rest of the
// process.
func testGoroutines() int {
	buf := make([]byte, 1<<20)
	if strings.Contains(string(buf[:runtime.Stack(buf, true)]), "os/signal.signal_recv") {
		return runtime.NumGoroutine() - 1
	}
	return runtime.NumGoroutine()
}

// watchdogProbeEvery and watchdogBound: the watchdog sends a probe to its
// own sleeping pool this often, and gives up on an answer after this long.
const (
	watchdogProbeEvery = 200 * time.Millisecond
	watchdogBound      = 10 * time.Second
)

// startWakeWatchdog starts a pool of its own whose root task answers
// values sent on a Chan, and a goroutine that sends one every
// watchdogProbeEvery. The pool is asleep between probes, so each probe is
// a wake from another goroutine: if one goes unanswered for watchdogBound,
// wakes are being lost, every test that waits on one hangs, and the
// watchdog ends the process with a message saying so and every goroutine's
// stack (the hung test's among them). It keeps two fds and two goroutines
// for the whole run, created before the first test counts them.
//
// The returned function stops the watchdog and closes its pool.
func startWakeWatchdog() (stop func()) {
	p, err := New(WithName("wake-watchdog"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "wake watchdog: %v\n", err)
		os.Exit(1)
	}
	probes := NewChan[int]()
	answers := make(chan int, 1)
	ran := make(chan error, 1)
	go func() {
		ran <- p.Run(func(tk *Task) error {
			for {
				v, err := probes.Recv(tk)
				if err != nil {
					return nil // the watchdog stopped
				}
				answers <- v
			}
		})
	}()
	// probe sends one value and waits for the answer; false if the pool's
	// Run has ended.
	probe := func(i int) bool {
		if err := probes.Send(i); err != nil {
			return false
		}
		select {
		case <-answers:
			return true
		case err := <-ran:
			fmt.Fprintf(os.Stderr, "wake watchdog: its pool's Run returned early (%v); watchdog off\n", err)
			return false
		case <-time.After(watchdogBound):
			lostWake(p, "a Chan.Send from another goroutine did not wake the watchdog's sleeping pool")
			return false
		}
	}
	// Before any test runs, the pool's loop goroutine must exist (a test
	// counting goroutines must not see it appear): wait until the loop
	// sleeps. Not a probe: with wakes lost, that would hold every test
	// back for watchdogBound, and the named wake tests of
	// backend_epoll_test.go say it in half the time.
	for deadline := time.Now().Add(watchdogBound); ; time.Sleep(100 * time.Microsecond) {
		p.mu.Lock()
		asleep := p.state.state == stateSleeping
		p.mu.Unlock()
		if asleep {
			break
		}
		if time.Now().After(deadline) {
			lostWake(p, "the watchdog's pool did not go to sleep")
		}
	}
	quit, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(watchdogProbeEvery)
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case <-quit:
				return
			case <-tick.C:
			}
			if !probe(i) {
				return
			}
		}
	}()
	return func() {
		close(quit)
		<-stopped
		probes.Close()
		select {
		case <-ran:
		case <-time.After(watchdogBound):
			lostWake(p, "closing the probe Chan did not wake the watchdog's sleeping pool at the end of the run")
		}
		_ = p.Close()
	}
}

// lostWake ends the process: what failed, the tests hung on it, and every
// goroutine's stack.
func lostWake(p *Pool, what string) {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	fmt.Fprintf(os.Stderr, "FAIL: wake watchdog (TestMain): lost wake-up: %s within %v (poolState.wake, epollBackend.wake); "+
		"tests hung now: %v. Stats %+v. Goroutines:\n%s\n", what, watchdogBound, runningTests(buf), p.Stats(), buf)
	os.Exit(1)
}

// runningTests names the tests, examples and fuzz targets in a goroutine
// dump.
func runningTests(stacks []byte) []string {
	var names []string
	for _, m := range testFrame.FindAllSubmatch(stacks, -1) {
		if name := string(m[1]); name != "TestMain" && !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	return names
}

var testFrame = regexp.MustCompile(`iopool(?:_test)?\.((?:Test|Example|Fuzz)[A-Za-z0-9_]*)\(`)
