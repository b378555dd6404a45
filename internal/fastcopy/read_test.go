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

// chunkedReader returns at most the next of its sizes per Read (cycling),
// as a socket does.
type chunkedReader struct {
	data  []byte
	sizes []int
	i     int
}

func (r *chunkedReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := len(p)
	if len(r.sizes) > 0 {
		n = min(n, r.sizes[r.i%len(r.sizes)])
		r.i++
	}
	n = copy(p, r.data[:min(n, len(r.data))])
	r.data = r.data[n:]
	return n, nil
}

// FuzzReadFull reads a stream as records of the sizes the fuzzer picks,
// through reads of the sizes it picks, with ReadFull and with
// io.ReadFull, and compares the bytes, counts and errors.
func FuzzReadFull(f *testing.F) {
	f.Add([]byte("header then payload"), []byte{3, 200, 7}, []byte{28, 255, 1})
	f.Add(make([]byte, 9000), []byte{0, 1}, []byte{})
	f.Fuzz(func(t *testing.T, data, reads, records []byte) {
		sizes := func(b []byte, scale int) []int {
			out := make([]int, len(b))
			for i, x := range b {
				out[i] = 1 + int(x)*scale
			}
			return out
		}
		rs := sizes(reads, 37)
		recs := sizes(records, 41)
		if len(recs) == 0 {
			recs = []int{4096}
		}
		a := bufio.NewReaderSize(&chunkedReader{data: data, sizes: rs}, 64)
		b := bufio.NewReaderSize(&chunkedReader{data: data, sizes: rs}, 64)
		for i := 0; i < 64; i++ {
			n := recs[i%len(recs)]
			pa, pb := make([]byte, n), make([]byte, n)
			na, ea := ReadFull(a, pa)
			nb, eb := io.ReadFull(b, pb)
			if na != nb || ea != eb || !bytes.Equal(pa, pb) {
				t.Fatalf("record %d of %d bytes: ReadFull %d, %v; io.ReadFull %d, %v", i, n, na, ea, nb, eb)
			}
			if ea != nil {
				return
			}
		}
	})
}
