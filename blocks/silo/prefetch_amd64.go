package silo

import "unsafe"

// warmLines starts loading the cache lines of b: PREFETCHT0 hints, which
// never fault (b may be mapped file memory) and, unlike loads, retire at
// once, so the work after them (a CRC of the record before) goes on while
// the lines arrive. acc is unused here (see prefetch_other.go).
func warmLines(b []byte, _ *byte) {
	if len(b) > 0 {
		prefetchLines(unsafe.Pointer(unsafe.SliceData(b)), uintptr(len(b)))
	}
}

// prefetchLines issues a PREFETCHT0 for every 64 bytes of [p, p+n).
//
//go:noescape
func prefetchLines(p unsafe.Pointer, n uintptr)
