//go:build race

package bridge

// raceEnabled: the race detector slows the gateway several times over, so
// load tests send less.
const raceEnabled = true
