//go:build !amd64

package crc32c

const (
	haveFold   = false
	haveShort4 = false
	foldMin    = 0
)

func fold(crc uint32, p []byte) uint32 { panic("crc32c: no fold on this architecture") }

func fold4(crc *[4]uint32, p0, p1, p2, p3 *byte, n int) {
	panic("crc32c: no fold on this architecture")
}

func short4(crc *[4]uint32, p0, p1, p2, p3 *byte, n int) {
	panic("crc32c: no short4 on this architecture")
}

func folds() []foldImpl { return nil }
