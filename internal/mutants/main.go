//go:build linux

// Command mutants plants known bugs, one at a time, in a scratch copy of the
// module and checks that the test suite catches each within a time bound:
// the repeatable form of issue 24's exercise. Run it from the module root:
//
//	go run ./internal/mutants            # every mutant
//	go run ./internal/mutants -only clearready-noop,lost-eventfd-write
//
// Each mutant names a file, an exact snippet that must occur in it once, and
// its replacement. A snippet that is not found is a failure of the exercise:
// the code moved, and the mutant (in mutants.go) must be re-targeted. Each
// mutant runs go test -count=1 -failfast -json on the packages and -run
// pattern it names; it is killed when a test (or the package: a watchdog, a
// panic) fails within bound of test time. The table printed at the end says
// which test failed first and when; the exit status is non-zero if a mutant
// survived, failed too late, did not compile, or was not found.
//
// A refusal mutant plants a reason outside the code for tests not to run
// (the kernel refusing io_uring) and checks the other direction: every
// test it reaches passes or skips, at least one skips, none fails or hangs.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

func main() {
	only := flag.String("only", "", "comma-separated mutant names to run (default: all)")
	bound := flag.Duration("bound", 30*time.Second, "test time within which a mutant must fail")
	keep := flag.Bool("keep", false, "keep the scratch copy")
	flag.Parse()
	root, err := os.Getwd()
	if err != nil {
		fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		fatal(fmt.Errorf("run from the module root: %w", err))
	}
	selected, err := selectMutants(mutants, *only)
	if err != nil {
		fatal(err)
	}
	scratch, err := os.MkdirTemp("", "iopool-mutants-")
	if err != nil {
		fatal(err)
	}
	if err := copyTree(root, scratch); err != nil {
		os.RemoveAll(scratch)
		fatal(err)
	}
	fmt.Printf("scratch copy: %s; bound %v of test time per mutant\n", scratch, *bound)
	var results []result
	for _, m := range selected {
		r := runMutant(scratch, m, *bound)
		fmt.Printf("%-28s %-8s %-55s %s\n", m.name, r.verdict, r.test, r.elapsed())
		results = append(results, r)
	}
	if !*keep {
		os.RemoveAll(scratch) // here, not deferred: the exits below skip defers
	}
	fmt.Println()
	fmt.Println("| mutation | file | first failing test | time to fail | verdict |")
	fmt.Println("|---|---|---|---|---|")
	bad := 0
	for i, r := range results {
		m := selected[i]
		fmt.Printf("| %s: %s | %s | %s | %s | %s |\n", m.name, m.what, m.file, r.test, r.elapsed(), r.verdict)
		if !r.ok() {
			bad++
			if r.detail != "" {
				fmt.Fprintf(os.Stderr, "%s: %s\n", m.name, r.detail)
			}
		}
	}
	if bad > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d of %d mutants not killed (or, for a refusal, not skipped) within %v\n", bad, len(results), *bound)
		os.Exit(1)
	}
	fmt.Printf("ok: %d mutants, each killed (or, for a refusal, skipped) within %v\n", len(results), *bound)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "mutants:", err)
	os.Exit(2)
}

// mutant is one planted bug.
type mutant struct {
	name     string   // short id
	what     string   // the bug, in words
	file     string   // path from the module root
	old, new string   // old must occur exactly once in file
	pkgs     []string // packages to test
	run      string   // -run pattern
	refusal  bool     // not a bug: the tests must skip, none fail
}

// result is what happened to one mutant.
type result struct {
	verdict string        // killed, SURVIVED, TOO SLOW, NOT FOUND, NO BUILD; for a refusal: skipped, FAILED, NO SKIP, TOO SLOW
	test    string        // the first failing test, or why there is none
	took    time.Duration // test time to the first failure
	detail  string
}

// ok reports whether the mutant did what it must: killed, or for a
// refusal, skipped.
func (r result) ok() bool { return r.verdict == "killed" || r.verdict == "skipped" }

func (r result) elapsed() string {
	if r.took == 0 {
		return "-"
	}
	return r.took.Round(10 * time.Millisecond).String()
}

func selectMutants(all []mutant, only string) ([]mutant, error) {
	if only == "" {
		return all, nil
	}
	var out []mutant
	for _, name := range strings.Split(only, ",") {
		found := false
		for _, m := range all {
			if m.name == name {
				out, found = append(out, m), true
			}
		}
		if !found {
			return nil, fmt.Errorf("no mutant named %q", name)
		}
	}
	return out, nil
}

// plant applies m to src, or says exactly why it cannot.
func plant(m mutant, src []byte) ([]byte, error) {
	switch n := bytes.Count(src, []byte(m.old)); n {
	case 1:
		return bytes.Replace(src, []byte(m.old), []byte(m.new), 1), nil
	case 0:
		return nil, fmt.Errorf("mutant %s: snippet not found in %s (the code moved: re-target it in internal/mutants/mutants.go): %q", m.name, m.file, m.old)
	default:
		return nil, fmt.Errorf("mutant %s: snippet found %d times in %s, want once (make it longer): %q", m.name, n, m.file, m.old)
	}
}

func runMutant(scratch string, m mutant, bound time.Duration) result {
	path := filepath.Join(scratch, m.file)
	orig, err := os.ReadFile(path)
	if err != nil {
		return result{verdict: "NOT FOUND", test: "-", detail: fmt.Sprintf("mutant %s: %v", m.name, err)}
	}
	mutated, err := plant(m, orig)
	if err != nil {
		return result{verdict: "NOT FOUND", test: "-", detail: err.Error()}
	}
	if err := os.WriteFile(path, mutated, 0o644); err != nil {
		return result{verdict: "NOT FOUND", test: "-", detail: err.Error()}
	}
	defer os.WriteFile(path, orig, 0o644)
	// Compile time is not test time: -json's per-package start event
	// marks when the test binary began. The whole command gets the bound
	// plus room for the build.
	ctx, cancel := context.WithTimeout(context.Background(), bound+3*time.Minute)
	defer cancel()
	args := []string{"test", "-count=1", "-json", "-timeout", "60s", "-run", m.run}
	if !m.refusal {
		args = append(args, "-failfast") // the first failure is the answer
	}
	args = append(args, m.pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = scratch
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	out, _ := cmd.Output() // a failing suite exits non-zero: that is the point
	if m.refusal {
		return judgeRefusal(out, bound)
	}
	return judge(out, bound)
}

// event is one line of go test -json (test2json).
type event struct {
	Time        time.Time
	Action      string
	Package     string
	Test        string
	Output      string
	FailedBuild string
}

// events decodes go test -json output; lines that are not events are left
// out.
func events(out []byte) []event {
	var all []event
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			all = append(all, e)
		}
	}
	return all
}

// buildFailed reports whether e says the mutant does not compile.
func buildFailed(e event) bool {
	return e.FailedBuild != "" || (e.Action == "fail" && strings.Contains(e.Output, "build failed"))
}

// judge reads go test -json output: the first failing test and its time
// since its package's binary started.
func judge(out []byte, bound time.Duration) result {
	starts := map[string]time.Time{}
	var firstFail *event
	var pkgFail *event
	var hint string
	for _, e := range events(out) {
		switch {
		case buildFailed(e):
			return result{verdict: "NO BUILD", test: "-", detail: "the mutant does not compile: " + e.FailedBuild}
		case e.Action == "start":
			starts[e.Package] = e.Time
		case e.Action == "output" && e.Test == "" && hint == "":
			if s := strings.TrimSpace(e.Output); strings.HasPrefix(s, "FAIL: wake watchdog") || strings.HasPrefix(s, "panic:") {
				hint = s
			}
		case e.Action == "fail" && e.Test != "" && firstFail == nil:
			firstFail = &e
		case e.Action == "fail" && e.Test == "" && pkgFail == nil:
			pkgFail = &e
		}
	}
	var r result
	switch {
	case firstFail != nil:
		r.test = firstFail.Test
		r.took = firstFail.Time.Sub(starts[firstFail.Package])
	case pkgFail != nil:
		r.test = "(package " + pkgFail.Package + ")"
		if hint != "" {
			r.test += " " + truncate(hint, 40)
		}
		r.took = pkgFail.Time.Sub(starts[pkgFail.Package])
	default:
		return result{verdict: "SURVIVED", test: "(every test passed)"}
	}
	r.verdict = "killed"
	if r.took > bound {
		r.verdict = "TOO SLOW"
	}
	return r
}

// judgeRefusal reads go test -json output for a refusal mutant: no test
// (and no package: a timeout, a panic) fails, and some skip. Its time is the
// longest package's test time.
func judgeRefusal(out []byte, bound time.Duration) result {
	starts := map[string]time.Time{}
	skipped := 0
	var r result
	for _, e := range events(out) {
		switch {
		case buildFailed(e):
			return result{verdict: "NO BUILD", test: "-", detail: "the mutant does not compile: " + e.FailedBuild}
		case e.Action == "start":
			starts[e.Package] = e.Time
		case e.Action == "skip" && e.Test != "":
			skipped++
		case e.Action == "fail" && r.verdict == "":
			r.verdict, r.test = "FAILED", e.Test
			if e.Test == "" {
				r.test = "(package " + e.Package + ")"
			}
			r.took = e.Time.Sub(starts[e.Package])
		case (e.Action == "pass" || e.Action == "skip") && e.Test == "" && r.verdict == "":
			r.took = max(r.took, e.Time.Sub(starts[e.Package]))
		}
	}
	switch {
	case r.verdict != "":
		r.detail = r.test + " failed where it must skip or pass"
		return r
	case skipped == 0:
		return result{verdict: "NO SKIP", test: "(no test skipped)", detail: "no test skipped: the refusal is not reached"}
	}
	r.test = fmt.Sprintf("none failed, %d skipped", skipped)
	r.verdict = "skipped"
	if r.took > bound {
		r.verdict = "TOO SLOW"
	}
	return r
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// copyTree copies the module's files into dst, leaving out version control
// and the bench module (docs stay: a test checks the tests they name).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if d.IsDir() {
			if rel != "." && (strings.HasPrefix(d.Name(), ".") || rel == "bench") {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
}
