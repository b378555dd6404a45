package crc32c

import (
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

func TestUpdateMatchesHashCRC32(t *testing.T) {
	if !haveFold {
		t.Log("no VPCLMULQDQ here: Update is hash/crc32's")
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
// to 2 KiB (foldMin keeps the shorter ones from Update), in every width
// this processor runs, over patterns
// that set single bits, where a wrong constant shows at once.
func TestFoldEveryLength(t *testing.T) {
	for _, f := range eachFold(t) {
		t.Run(f.name, func(t *testing.T) { testFold(t, f.fold) })
	}
}

// eachFold returns the fold widths this processor runs, skipping the test
// where it runs none (Update's tests still run, on hash/crc32).
func eachFold(t *testing.T) []foldImpl {
	l := folds()
	if len(l) == 0 {
		t.Skip("no VPCLMULQDQ on this machine")
	}
	return l
}

func testFold(t *testing.T, fold func(uint32, []byte) uint32) {
	rng := rand.New(rand.NewPCG(3, 4))
	for n := 64; n <= 2048; n += 16 {
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

// TestUpdate4 checks Update4 against Update on inputs of equal and of
// different lengths (the fold takes their common multiple of 64 bytes,
// Update the rest), from distinct initial values.
func TestUpdate4(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	buf := make([]byte, 40000)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	lengths := []int{0, 1, 63, 64, 128, 255, 256, 257, 320, 4096, 4152, 4232, 9000}
	for n := range 100 { // short4 alone, every remainder of its 8-byte steps
		lengths = append(lengths, n)
	}
	for range 200 {
		lengths = append(lengths, rng.IntN(9000))
	}
	for _, n := range lengths {
		for _, same := range []bool{true, false} {
			var p [4][]byte
			var crc, want [4]uint32
			for i := range 4 {
				m := n
				if !same {
					m = max(0, n-rng.IntN(300))
				}
				off := rng.IntN(len(buf) - m)
				p[i] = buf[off : off+m]
				crc[i] = rng.Uint32()
				want[i] = Update(crc[i], p[i])
			}
			Update4(&crc, &p)
			if crc != want {
				t.Fatalf("Update4 of lengths %d %d %d %d: %#x, Update says %#x", len(p[0]), len(p[1]), len(p[2]), len(p[3]), crc, want)
			}
		}
	}
}

// TestFold4EveryLength runs fold4 itself on every length it accepts up to
// 2 KiB, each of the four inputs with its own content and initial state,
// against hash/crc32.
func TestFold4EveryLength(t *testing.T) {
	for _, f := range eachFold(t) {
		t.Run(f.name, func(t *testing.T) { testFold4(t, f.fold4) })
	}
}

func testFold4(t *testing.T, fold4 func(*[4]uint32, *byte, *byte, *byte, *byte, int)) {
	rng := rand.New(rand.NewPCG(7, 8))
	for n := 64; n <= 2048; n += 16 {
		var p [4][]byte
		var st, want [4]uint32
		for i := range 4 {
			p[i] = make([]byte, n)
			switch i {
			case 0: // zeros
			case 1:
				p[i][rng.IntN(n)] = 1 << rng.IntN(8)
			default:
				for j := range p[i] {
					p[i][j] = byte(rng.Uint32())
				}
			}
			init := rng.Uint32()
			want[i] = crc32.Update(init, table, p[i])
			st[i] = ^init
		}
		fold4(&st, &p[0][0], &p[1][0], &p[2][0], &p[3][0], n)
		for i := range 4 {
			if got := ^st[i]; got != want[i] {
				t.Fatalf("fold4 of %d bytes, input %d: %#x, hash/crc32 says %#x", n, i, got, want[i])
			}
		}
	}
}
