//go:build !amd64

package silo

// warmLines loads one byte of every 64 of b into acc, so that the lines
// are on their way while the caller works on what it has (see
// prefetch_amd64.go). b may be mapped file memory: the caller catches a
// fault (debug.SetPanicOnFault).
func warmLines(b []byte, acc *byte) {
	for k := 0; k < len(b); k += 64 {
		*acc += b[k]
	}
}
