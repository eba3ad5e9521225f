package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestEchoRunsAndVerifies(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"-duration", "300ms", "-conns", "4", "-size", "100", "-progress=false"}, &out)
	require.NoError(t, err, out.String())
	require.Contains(t, out.String(), "requests/s")
	require.Contains(t, out.String(), "µs/request")
	require.NotContains(t, out.String(), "requests                     0 ")
}

func TestEchoThreadPerCore(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"-duration", "200ms", "-conns", "8", "-pools", "2", "-progress=false"}, &out)
	require.NoError(t, err, out.String())
	require.Contains(t, out.String(), "pool 1 stats")
	requirePoolTable(t, out.String(), 2)
}

func TestEchoGroupPinnedAndSteered(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"-duration", "200ms", "-conns", "8", "-pools", "2", "-pin", "-steer", "-progress=false"}, &out)
	require.NoError(t, err, out.String())
	require.Contains(t, out.String(), "steered to the receiving CPU")
	requirePoolTable(t, out.String(), 2)
}

// requirePoolTable checks the per-pool table: a row per pool, and the
// connections of the rows add up to the load's.
func requirePoolTable(t *testing.T, out string, pools int) {
	t.Helper()
	_, table, ok := strings.Cut(out, "pool  cpu  conns")
	require.True(t, ok, "no per-pool table in:\n%s", out)
	lines := strings.Split(strings.TrimSpace(table), "\n")
	require.Len(t, lines, 1+pools+1, table) // header rest, pools, "all"
	conns := 0
	for _, line := range lines[1 : 1+pools] {
		f := strings.Fields(line)
		n, err := strconv.Atoi(f[2])
		require.NoError(t, err, line)
		conns += n
	}
	all := strings.Fields(lines[1+pools])
	require.Equal(t, "all", all[0])
	require.Equal(t, strconv.Itoa(conns), all[1], "the all row sums the pools' connections")
	require.Equal(t, 8, conns, "every load connection was accepted by one pool")
}

func TestEchoRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-conns", "0"}, {"-size", "-3"}, {"-duration", "0s"}, {"-steer"}, {"extra"}, {"-nope"}} {
		var out bytes.Buffer
		err := run(context.Background(), args, &out)
		require.Error(t, err, "%v", args)
		require.True(t, errors.Is(err, flag.ErrHelp) || out.Len() > 0, "%v: usage is printed", args)
		require.Contains(t, out.String(), "Usage", "%v", args)
	}
}

func TestEchoPortTaken(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = run(ctx, []string{"-listen", l.Addr().String()}, &bytes.Buffer{})
	require.ErrorContains(t, err, l.Addr().String())
	require.ErrorContains(t, err, "address already in use")
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h[bucketOf(int64(i)*1000)]++
	}
	p50 := h.quantile(0.5)
	require.InDelta(t, 500e3, float64(p50), 500e3*0.13)
	require.InDelta(t, 990e3, float64(h.quantile(0.99)), 990e3*0.13)
}
