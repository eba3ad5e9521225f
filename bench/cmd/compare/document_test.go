//go:build linux

package main

import (
	"strings"
	"testing"
)

// The geometric-mean and ratio tables are computed from the points: with
// CPU per request 2 and 8 µs for a server whose floor is 1 and 2 µs, its
// mean ÷ floor is √(2·4) ≈ 2.83; gnet at 1 and 4 gives ÷ gnet √(2·2) = 2.
func TestDocumentComputesRatiosAndGeometricMeans(t *testing.T) {
	lp1, lp2 := LoadPoint{Conns: 1, Size: 64, Depth: 1}, LoadPoint{Conns: 16, Size: 64, Depth: 1}
	var pts []Point
	for _, p := range []struct {
		impl     string
		at1, at2 float64
	}{
		{"x/locked", 2, 8}, {"x/unlocked", 4, 4}, {"rawepoll/locked", 1, 2}, {"rawepoll/unlocked", 3, 3}, {"gnet", 1, 4},
	} {
		pts = append(pts, Point{Impl: p.impl, LoadPoint: lp1, Pinned: true, CPUPerReq: p.at1},
			Point{Impl: p.impl, LoadPoint: lp2, Pinned: true, CPUPerReq: p.at2})
	}
	res := Results{Machine: Machine{CPUModel: "Test CPU", CPUs: 2, LoadStart: "3.00 2.00 1.00"}, Reps: 3, Duration: "1s", Points: pts,
		HTTP: []Point{{Impl: "http-gonet", Pinned: true, ReqPerSec: 1000}, {Impl: "http-netconn/locked", Pinned: true, ReqPerSec: 1500}}}
	doc := document(res, "")
	for _, want := range []string{
		"| x/locked | 2.83 | 2.00 |", // geometric means ÷ floor, ÷ gnet
		"| 16 × 64 B | 4.00 |",       // x/locked ÷ floor at the second point
		"| x | 1.00 |",               // locked ÷ unlocked: √(0.5·2)
		"| pinned | http-netconn/locked | 0 | 1500 | 1.50 |",
		"CPU: Test CPU, 2 CPUs",
		"**The machine was busy** (load average 3.0 on 2 CPUs",
		"- Separate processes, pinned, http-netconn/locked ≥ 1.00× Go net: 1.50×, met.",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("the document lacks %q:\n%s", want, doc)
		}
	}
	if strings.Contains(doc, "A million connections\n\n") {
		t.Error("a section for conns.md without conns.md")
	}
	withConns := document(res, "Held 1,000,000 connections.\n")
	if !strings.Contains(withConns, "## A million connections\n\nHeld 1,000,000 connections.\n") {
		t.Errorf("conns.md without its own heading is not given one:\n%s", withConns)
	}
}
