//go:build linux && race

package iopool

// raceEnabled: the race detector instruments every function, so stack
// sizes measured under it are not those of a plain build.
const raceEnabled = true
