//go:build linux

package iopool

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The fdRef state table, step by step.
func TestFdRefTransitions(t *testing.T) {
	parallel(t)
	var r fdRef
	require.True(t, r.incref(), "open: a syscall takes a reference")
	require.True(t, r.incref())
	require.Equal(t, 2*refOne, r.state.Load())
	require.True(t, r.markClosing(), "the first Close")
	require.False(t, r.markClosing(), "a second Close sees the first")
	require.True(t, r.closing())
	require.Equal(t, refClosing+3*refOne, r.state.Load(), "two syscalls in flight and Close's reference")
	require.False(t, r.incref(), "closing: no new syscall")
	require.Equal(t, refClosing+3*refOne, r.state.Load(), "a refused incref leaves the word unchanged")
	r.decref()
	r.decref()
	require.Equal(t, refClosing+refOne, r.state.Load(), "only Close's reference is left: it may close the number")
	r.waitFor(refClosing + refOne)
	r.decref()
	require.Equal(t, refClosing, r.state.Load(), "closed, no references")
}

// BenchmarkFdRefAcquireRelease is the cost a registered fd adds to each
// read, write or accept: the reference taken and dropped around the syscall.
func BenchmarkFdRefAcquireRelease(b *testing.B) {
	p, err := New()
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	fr := &FdReady{p: p}
	b.ReportAllocs()
	for b.Loop() {
		if !fr.acquire() {
			b.Fatal("refused")
		}
		fr.releaseRef()
	}
}
