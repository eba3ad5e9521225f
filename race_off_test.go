//go:build linux && !race

package iopool

// raceEnabled: see race_on_test.go.
const raceEnabled = false
