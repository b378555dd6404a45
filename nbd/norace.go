//go:build !race

package nbd

// Without -race there is nothing to tell (race.go).

func raceReleaseIO(fd uintptr) {}

func raceAcquireIO(fd uintptr) {}
