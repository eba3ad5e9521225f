//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

func writeOutputs(dir string, res Results) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	conns, err := os.ReadFile(filepath.Join(dir, connsFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "benchmarks.md"), []byte(document(res, string(conns))), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "benchmarks.svg"), []byte(chart(res)), 0o644)
}

// rerender rewrites dir's benchmarks.md and benchmarks.svg from its
// results.json, measuring nothing.
func rerender(dir string) error {
	js, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		return err
	}
	var res Results
	if err := json.Unmarshal(js, &res); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(dir, "results.json"), err)
	}
	return writeOutputs(dir, res)
}

// table collects the points of one mode by load point and server.
type table struct {
	points []LoadPoint
	impls  []string
	at     map[LoadPoint]map[string]Point
}

func tableOf(pts []Point, pinned bool) table {
	t := table{at: map[LoadPoint]map[string]Point{}}
	for _, p := range pts {
		if p.Pinned != pinned {
			continue
		}
		if t.at[p.LoadPoint] == nil {
			t.points = append(t.points, p.LoadPoint)
			t.at[p.LoadPoint] = map[string]Point{}
		}
		if !slices.Contains(t.impls, p.Impl) {
			t.impls = append(t.impls, p.Impl)
		}
		t.at[p.LoadPoint][p.Impl] = p
	}
	return t
}

// floor is the raw epoll loop's CPU per request at lp: the lower of its
// locked and unlocked medians, so that it stays the honest floor.
func (t table) floor(lp LoadPoint) float64 {
	best := 0.0
	for impl, p := range t.at[lp] {
		if strings.HasPrefix(impl, "rawepoll") && p.CPUPerReq > 0 && (best == 0 || p.CPUPerReq < best) {
			best = p.CPUPerReq
		}
	}
	return best
}

// rows writes one markdown table: a row per load point, a column per
// server, cell(point, server) in each.
func (t table) rows(b *strings.Builder, cols []string, cell func(lp LoadPoint, impl string) string) {
	b.WriteString("| point |")
	for _, c := range cols {
		fmt.Fprintf(b, " %s |", c)
	}
	b.WriteString("\n|---|" + strings.Repeat("---:|", len(cols)) + "\n")
	for _, lp := range t.points {
		fmt.Fprintf(b, "| %v |", lp)
		for _, c := range cols {
			fmt.Fprintf(b, " %s |", cell(lp, c))
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// chart draws the server CPU per request of the pinned mode (or the only
// mode run) as grouped bars, one group per load point, one bar per server.
func chart(res Results) string {
	pinned := slices.ContainsFunc(res.Points, func(p Point) bool { return p.Pinned })
	t := tableOf(res.Points, pinned)
	maxv := 0.0
	for _, p := range res.Points {
		if p.Pinned == pinned {
			maxv = max(maxv, p.CPUPerReq)
		}
	}
	colors := []string{"#1f77b4", "#aec7e8", "#2ca02c", "#98df8a", "#9467bd", "#c5b0d5", "#7f7f7f", "#c7c7c7", "#d62728", "#ff7f0e", "#8c564b"}
	const h, top, bottom, left, barW, gap = 380.0, 40.0, 50.0, 60.0, 10.0, 24.0
	groupW := float64(len(t.impls))*barW + gap
	w := left + float64(len(t.points))*groupW + 190
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`+"\n", w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="%.0f" y="20" font-size="14">Server CPU per request (µs, lower is better), %s</text>`+"\n", left, xmlEscape(modeName(pinned)))
	plotH := h - top - bottom
	for i := 0; i <= 4; i++ {
		v := maxv * float64(i) / 4
		y := top + plotH - plotH*float64(i)/4
		fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%.0f" y="%.1f" text-anchor="end">%.1f</text>`+"\n", left, w-190, y, y, left-6, y+4, v)
	}
	for gi, lp := range t.points {
		x0 := left + float64(gi)*groupW + gap/2
		for ii, impl := range t.impls {
			p, ok := t.at[lp][impl]
			if !ok || maxv == 0 {
				continue
			}
			bh := plotH * p.CPUPerReq / maxv
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.0f" height="%.1f" fill="%s"><title>%s %s: %.2f µs</title></rect>`+"\n",
				x0+float64(ii)*barW, top+plotH-bh, barW-1, bh, colors[ii%len(colors)], impl, xmlEscape(lp.String()), p.CPUPerReq)
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%s</text>`+"\n", x0+float64(len(t.impls))*barW/2, h-bottom+16, xmlEscape(lp.String()))
	}
	for ii, impl := range t.impls {
		y := top + float64(ii)*18
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="12" height="12" fill="%s"/><text x="%.0f" y="%.0f">%s</text>`+"\n", w-180, y, colors[ii%len(colors)], w-162, y+10, impl)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
