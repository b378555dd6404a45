package crc32c

import (
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

func TestUpdateMatchesHashCRC32(t *testing.T) {
	if !haveFold {
		t.Log("no AVX-512 VPCLMULQDQ here: Update is hash/crc32's")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 20000)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	lengths := []int{0, 1, 15, 16, 63, 64, 127, 128, 129, 255, 256, 257, 271, 272, 320, 1000, 4096, 4096 + 56, 4232, 8192, 19999}
	for range 300 {
		lengths = append(lengths, rng.IntN(len(buf)-64))
	}
	for _, n := range lengths {
		for _, off := range []int{0, 1, 7, 33} {
			if off+n > len(buf) {
				continue
			}
			p := buf[off : off+n]
			init := rng.Uint32()
			if got, want := Update(init, p), crc32.Update(init, table, p); got != want {
				t.Fatalf("Update(%#x, %d bytes at %d) = %#x, hash/crc32 says %#x", init, n, off, got, want)
			}
			if got, want := Checksum(p), crc32.Checksum(p, table); got != want {
				t.Fatalf("Checksum(%d bytes at %d) = %#x, hash/crc32 says %#x", n, off, got, want)
			}
		}
	}
}

// TestFoldEveryLength runs the fold itself on every length it accepts up
// to 2 KiB (foldMin keeps the shorter ones from Update), over patterns
// that set single bits, where a wrong constant shows at once.
func TestFoldEveryLength(t *testing.T) {
	if !haveFold {
		t.Skip("no AVX-512 VPCLMULQDQ on this machine") // Update's test still runs
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for n := 128; n <= 2048; n += 16 {
		p := make([]byte, n)
		for _, fill := range []string{"zero", "one bit", "random"} {
			switch fill {
			case "one bit":
				clear(p)
				p[rng.IntN(n)] = 1 << rng.IntN(8)
			case "random":
				for i := range p {
					p[i] = byte(rng.Uint32())
				}
			}
			for _, init := range []uint32{0, 0xffffffff, rng.Uint32()} {
				got := ^fold(^init, p)
				if want := crc32.Update(init, table, p); got != want {
					t.Fatalf("fold of %d bytes (%s) from %#x: %#x, hash/crc32 says %#x", n, fill, init, got, want)
				}
			}
		}
	}
}

func FuzzUpdate(f *testing.F) {
	f.Add(uint32(0), []byte("123456789"))
	f.Add(uint32(0xdeadbeef), make([]byte, 300))
	f.Fuzz(func(t *testing.T, init uint32, p []byte) {
		if got, want := Update(init, p), crc32.Update(init, table, p); got != want {
			t.Fatalf("Update(%#x, %d bytes) = %#x, hash/crc32 says %#x", init, len(p), got, want)
		}
	})
}
