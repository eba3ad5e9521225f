//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPlantNeedsTheSnippetExactlyOnce(t *testing.T) {
	m := mutant{name: "m", file: "f.go", old: "a := 1\n", new: "a := 2\n"}
	got, err := plant(m, []byte("x\na := 1\ny\n"))
	require.NoError(t, err)
	require.Equal(t, "x\na := 2\ny\n", string(got))

	_, err = plant(m, []byte("x\n"))
	require.ErrorContains(t, err, "mutant m: snippet not found in f.go")
	_, err = plant(m, []byte("a := 1\na := 1\n"))
	require.ErrorContains(t, err, "mutant m: snippet found 2 times in f.go")
}

func TestEveryMutantNamesItsTests(t *testing.T) {
	seen := map[string]bool{}
	for _, m := range mutants {
		require.False(t, seen[m.name], "two mutants named %s", m.name)
		seen[m.name] = true
		require.NotEmpty(t, m.old, m.name)
		require.NotEqual(t, m.old, m.new, m.name)
		require.NotEmpty(t, m.pkgs, m.name)
		require.NotEmpty(t, m.run, m.name)
	}
}

func TestJudge(t *testing.T) {
	lines := func(ls ...string) []byte { return []byte(strings.Join(ls, "\n")) }
	r := judge(lines(
		`{"Time":"2026-01-01T00:00:00Z","Action":"start","Package":"p"}`,
		`{"Time":"2026-01-01T00:00:01Z","Action":"pass","Package":"p","Test":"TestA"}`,
		`{"Time":"2026-01-01T00:00:03Z","Action":"fail","Package":"p","Test":"TestB"}`,
		`{"Time":"2026-01-01T00:00:04Z","Action":"fail","Package":"p"}`,
	), 30*time.Second)
	require.Equal(t, result{verdict: "killed", test: "TestB", took: 3 * time.Second}, r)

	r = judge(lines(
		`{"Time":"2026-01-01T00:00:00Z","Action":"start","Package":"p"}`,
		`{"Time":"2026-01-01T00:00:40Z","Action":"fail","Package":"p","Test":"TestB"}`,
	), 30*time.Second)
	require.Equal(t, "TOO SLOW", r.verdict)

	r = judge(lines(
		`{"Time":"2026-01-01T00:00:00Z","Action":"start","Package":"p"}`,
		`{"Time":"2026-01-01T00:00:01Z","Action":"output","Package":"p","Output":"panic: test timed out\n"}`,
		`{"Time":"2026-01-01T00:00:02Z","Action":"fail","Package":"p"}`,
	), 30*time.Second)
	require.Equal(t, "killed", r.verdict)
	require.Contains(t, r.test, "(package p) panic: test timed out")

	r = judge(lines(`{"Time":"2026-01-01T00:00:00Z","Action":"start","Package":"p"}`, `{"Action":"pass","Package":"p"}`), 30*time.Second)
	require.Equal(t, "SURVIVED", r.verdict)

	r = judge(lines(`{"Action":"fail","Package":"p","FailedBuild":"p [p.test]"}`), 30*time.Second)
	require.Equal(t, "NO BUILD", r.verdict)
}

func TestJudgeRefusal(t *testing.T) {
	lines := func(ls ...string) []byte { return []byte(strings.Join(ls, "\n")) }
	r := judgeRefusal(lines(
		`{"Time":"2026-01-01T00:00:00Z","Action":"start","Package":"p"}`,
		`{"Time":"2026-01-01T00:00:01Z","Action":"skip","Package":"p","Test":"TestA"}`,
		`{"Time":"2026-01-01T00:00:01Z","Action":"pass","Package":"p","Test":"TestB"}`,
		`{"Time":"2026-01-01T00:00:02Z","Action":"pass","Package":"p"}`,
		`{"Time":"2026-01-01T00:00:00Z","Action":"start","Package":"q"}`,
		`{"Time":"2026-01-01T00:00:05Z","Action":"skip","Package":"q"}`,
	), 30*time.Second)
	require.Equal(t, result{verdict: "skipped", test: "none failed, 1 skipped", took: 5 * time.Second}, r)
	require.True(t, r.ok())

	r = judgeRefusal(lines(
		`{"Time":"2026-01-01T00:00:00Z","Action":"start","Package":"p"}`,
		`{"Time":"2026-01-01T00:00:01Z","Action":"skip","Package":"p","Test":"TestA"}`,
		`{"Time":"2026-01-01T00:00:02Z","Action":"fail","Package":"p","Test":"TestB"}`,
		`{"Time":"2026-01-01T00:00:03Z","Action":"fail","Package":"p"}`,
	), 30*time.Second)
	require.Equal(t, "FAILED", r.verdict)
	require.Equal(t, "TestB", r.test)
	require.False(t, r.ok())

	r = judgeRefusal(lines(
		`{"Time":"2026-01-01T00:00:00Z","Action":"start","Package":"p"}`,
		`{"Time":"2026-01-01T00:00:01Z","Action":"skip","Package":"p","Test":"TestA"}`,
		`{"Time":"2026-01-01T00:01:00Z","Action":"output","Package":"p","Output":"panic: test timed out\n"}`,
		`{"Time":"2026-01-01T00:01:00Z","Action":"fail","Package":"p"}`,
	), 30*time.Second)
	require.Equal(t, "FAILED", r.verdict, "a hang is a failure")
	require.Equal(t, "(package p)", r.test)

	r = judgeRefusal(lines(
		`{"Time":"2026-01-01T00:00:00Z","Action":"start","Package":"p"}`,
		`{"Time":"2026-01-01T00:00:01Z","Action":"pass","Package":"p"}`,
	), 30*time.Second)
	require.Equal(t, "NO SKIP", r.verdict)
	require.False(t, r.ok())
}

// TestEverySnippetIsInTheTree plants each mutant into the module's current
// source (without writing anything), so a refactor that moves a snippet fails
// here, in the ordinary test run, instead of at the end of CI's mutant pass.
func TestEverySnippetIsInTheTree(t *testing.T) {
	for _, m := range mutants {
		src, err := os.ReadFile(filepath.Join("..", "..", m.file))
		require.NoError(t, err, m.name)
		_, err = plant(m, src)
		require.NoError(t, err, "re-target mutant %s in internal/mutants/mutants.go", m.name)
	}
}
