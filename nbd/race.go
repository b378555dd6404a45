//go:build race

package nbd

import "syscall"

// The socket reads and writes made with syscall.RawSyscall (poll.go,
// writev.go) skip what syscall.Read and syscall.Write tell the race
// detector: a write releases, a read acquires, so that what one side did
// before sending happens before what the other side does after reading.
// Without it every test that checks a device's memory after a reply
// reports a race that is not there. Under -race each raw write is
// preceded by a zero-length syscall.Write and each raw read followed by a
// zero-length syscall.Read on the same socket, which make the same
// announcements (a zero-length read or write of a socket returns at once).

func raceReleaseIO(fd uintptr) { syscall.Write(int(fd), nil) }

func raceAcquireIO(fd uintptr) { syscall.Read(int(fd), nil) }
