//go:build !amd64

package fastcopy

// CopyNT is Copy where non-temporal stores are not written (see
// nt_amd64.go).
func CopyNT(dst, src []byte) int { return Copy(dst, src) }
