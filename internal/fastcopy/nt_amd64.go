package fastcopy

import "unsafe"

// CopyNT is Copy for a destination that is cold and will not be read
// again soon: its 64-byte blocks are written with non-temporal stores
// (MOVNTDQ), which do not read the destination's lines into the cache
// before writing them, then a fence makes them visible as ordinary stores
// are. The slices must not overlap (overlapping ones are left to Copy),
// and the destination must be 16-byte aligned for the fast path (else
// Copy); a tail of less than 64 bytes goes through copy.
//
// Why: the volume's write-back cache copies a whole written chunk into a
// chunk buffer from its pool, and with the cache cycling through up to
// its limit of buffers (gigabytes), each one was last touched long ago.
// Under fio's 1 MiB sequential writes at queue depth 8 over NBD, the
// cached stores' misses stalled the next locked instruction (the volume's
// lock) for 16-27% of the server's CPU; with CopyNT, three interleaved
// pairs of runs did 2,344-2,481 against 2,192-2,356 IOPS, 435-455 against
// 456-481 µs of server CPU per MiB. (Since then the NBD server lends
// payloads of 64 KiB or more to the volume, which keeps them without a
// copy: CopyNT serves the smaller writes, imports and direct WriteAt.)
func CopyNT(dst, src []byte) int {
	n := min(len(dst), len(src))
	d := uintptr(unsafe.Pointer(unsafe.SliceData(dst)))
	s := uintptr(unsafe.Pointer(unsafe.SliceData(src)))
	if n < 64 || d%16 != 0 || (d < s+uintptr(n) && s < d+uintptr(n)) {
		return Copy(dst, src)
	}
	body := n &^ 63
	copyNT(unsafe.Pointer(unsafe.SliceData(dst)), unsafe.Pointer(unsafe.SliceData(src)), uintptr(body))
	copy(dst[body:n], src[body:n])
	return n
}

// copyNT copies n bytes (a multiple of 64) from src to a 16-byte-aligned
// dst with non-temporal stores, then SFENCE (nt_amd64.s).
//
//go:noescape
func copyNT(dst, src unsafe.Pointer, n uintptr)
