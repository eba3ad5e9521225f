package main

import (
	"bytes"
	"context"
	"flag"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestTicksAndSignalsAreCounted(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"-interval", "5ms", "-ticks", "6"}, &out), out.String())
	s := out.String()
	for i := 1; i <= 6; i++ {
		require.Contains(t, s, "tick "+strconv.Itoa(i)+": timerfd ")
	}
	m := regexp.MustCompile(`summary: (\d+) ticks; timerfd late max (\S+); pool timer late max (\S+); eventfd (\d+)/(\d+) signals, hand-off median (\S+)\n`).FindStringSubmatch(s)
	require.NotNil(t, m, s)
	require.Equal(t, "6", m[1], "ticks")
	require.Equal(t, "6", m[4], "every eventfd signal from the goroutine reached the task")
	require.Equal(t, "6", m[5])
	for _, d := range []string{m[2], m[3], m[6]} {
		v, err := time.ParseDuration(d)
		require.NoError(t, err, d)
		require.GreaterOrEqual(t, v, time.Duration(0), "nothing fires early")
	}
}

func TestInterruptStopsEarly(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(30*time.Millisecond, cancel)
	var out bytes.Buffer
	start := time.Now()
	require.NoError(t, run(ctx, []string{"-interval", "10ms", "-ticks", "100000"}, &out), out.String())
	require.Less(t, time.Since(start), 10*time.Second, "canceling the context ends the run")
	require.Contains(t, out.String(), "summary: ")
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
