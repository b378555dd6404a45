package fastcopy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
)

// TestReadFullMatchesIO reads a stream as a run of records of random
// sizes (a header, then a payload) with ReadFull and checks every byte,
// through a reader that returns one byte at a time, one that returns
// short reads, and a plain one.
func TestReadFullMatchesIO(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	wraps := map[string]func(io.Reader) io.Reader{
		"plain":    func(r io.Reader) io.Reader { return r },
		"onebyte":  iotest.OneByteReader,
		"halfread": iotest.HalfReader,
	}
	for name, wrap := range wraps {
		for _, size := range []int{16, 4096, 64 << 10} {
			br := bufio.NewReaderSize(wrap(bytes.NewReader(data)), size)
			off := 0
			for off < len(data) {
				n := min(len(data)-off, []int{1, 28, 4096, 4124, 200 << 10}[rng.IntN(5)])
				p := make([]byte, n)
				got, err := ReadFull(br, p)
				if err != nil || got != n || !bytes.Equal(p, data[off:off+n]) {
					t.Fatalf("%s/%d: at %d, read %d of %d: %v", name, size, off, got, n, err)
				}
				off += n
			}
			if n, err := ReadFull(br, make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("%s/%d: at the end: %d, %v; want 0, EOF", name, size, n, err)
			}
		}
	}
}

// TestReadFullErrors checks io.ReadFull's errors: EOF with nothing read,
// ErrUnexpectedEOF with part of p read, and another error as it is.
func TestReadFullErrors(t *testing.T) {
	br := bufio.NewReaderSize(bytes.NewReader(make([]byte, 5000)), 16)
	if n, err := ReadFull(br, make([]byte, 6000)); n != 5000 || err != io.ErrUnexpectedEOF {
		t.Fatalf("short stream: %d, %v; want 5000, unexpected EOF", n, err)
	}
	br = bufio.NewReaderSize(bytes.NewReader(make([]byte, 5000)), 8192)
	if n, err := ReadFull(br, make([]byte, 6000)); n != 5000 || err != io.ErrUnexpectedEOF {
		t.Fatalf("short stream, buffered: %d, %v; want 5000, unexpected EOF", n, err)
	}
	boom := errors.New("boom")
	br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(make([]byte, 100)), iotest.ErrReader(boom)), 16)
	if n, err := ReadFull(br, make([]byte, 200)); n != 100 || !errors.Is(err, boom) {
		t.Fatalf("failing stream: %d, %v; want 100, boom", n, err)
	}
}
