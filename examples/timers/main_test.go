//go:build linux

package main

import (
	"bytes"
	"context"
	"flag"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// summaryRE parses the summary line: ticks, timerfd late max, pool timer
// ticks and late max, eventfd signals received and sent, hand-off median.
var summaryRE = regexp.MustCompile(`summary: (\d+) ticks; timerfd late max (\S+); pool timer (\d+) ticks, late max (\S+); eventfd (\d+)/(\d+) signals received/sent, hand-off median (\S+)\n`)

func TestTicksAndSignalsAreCounted(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"-interval", "5ms", "-ticks", "6"}, &out), out.String())
	s := out.String()
	for i := 1; i <= 6; i++ {
		require.Contains(t, s, "tick "+strconv.Itoa(i)+": timerfd ")
	}
	m := summaryRE.FindStringSubmatch(s)
	require.NotNil(t, m, s)
	require.Equal(t, "6", m[1], "ticks")
	require.Equal(t, "6", m[3], "pool timer ticks")
	require.Equal(t, "6", m[5], "every eventfd signal from the goroutine reached the task")
	require.Equal(t, "6", m[6], "signals sent")
	for _, d := range []string{m[2], m[4], m[7]} {
		v, err := time.ParseDuration(d)
		require.NoError(t, err, d)
		require.GreaterOrEqual(t, v, time.Duration(0), "nothing fires early")
	}
	require.NotContains(t, s, "interrupted")
}

// cancelAt is the output of a run that cancels its context once the output
// contains at.
type cancelAt struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	at     string
	cancel context.CancelFunc
}

func (w *cancelAt) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.at) {
		w.cancel()
	}
	return n, err
}

// Ctrl-C after the third tick: the summary reports what the tasks measured
// until then. Before, the root returned without collecting the sleeper's and
// the receiver's results ("pool timer late max 0s; eventfd 0/100 signals,
// hand-off median 0s") and printed the requested count as the count sent.
func TestInterruptReportsWhatWasMeasured(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &cancelAt{at: "tick 3:", cancel: cancel}
	start := time.Now()
	require.NoError(t, run(ctx, []string{"-interval", "10ms", "-ticks", "100000"}, w), w.buf.String())
	require.Less(t, time.Since(start), 10*time.Second, "canceling the context ends the run")
	s := w.buf.String()
	m := summaryRE.FindStringSubmatch(s)
	require.NotNil(t, m, s)
	ticks, _ := strconv.Atoi(m[1])
	sleeps, _ := strconv.Atoi(m[3])
	received, _ := strconv.Atoi(m[5])
	sent, _ := strconv.Atoi(m[6])
	require.GreaterOrEqual(t, ticks, 3, s)
	require.Regexp(t, `interrupted \(context canceled\) after \d+ of 100000 ticks`, s)
	// The sleeper's first deadline passed before the timerfd's second
	// tick, so the loop ran it before the cancel: its result is counted.
	require.GreaterOrEqual(t, sleeps, 1, "the pool timer's ticks are collected:\n%s", s)
	require.LessOrEqual(t, sent, ticks, "the signals sent, not the ticks requested:\n%s", s)
	require.LessOrEqual(t, received, sent, s)
	require.GreaterOrEqual(t, received, sent-1, "at most the signal in flight at the cancel is lost:\n%s", s)
}

func TestBadFlags(t *testing.T) {
	for args, want := range map[string][]string{
		"negative interval": {"-interval", "-1s"},
		"zero ticks":        {"-ticks", "0"},
		"unknown flag":      {"-nope"},
		"extra argument":    {"extra"},
	} {
		var out bytes.Buffer
		err := run(context.Background(), want, &out)
		require.ErrorIs(t, err, flag.ErrHelp, args)
		require.Contains(t, out.String(), "Usage", args)
		if args != "unknown flag" && args != "extra argument" {
			require.Contains(t, out.String(), want[0], "%s: the message names the flag", args)
		}
	}
}
