package volume

import (
	"bytes"
	"context"
	"math/rand/v2"
	"sync"
	"testing"
)

// Writers of runs of whole chunks beside writers of partial chunks (read-
// modify-write under a stripe lock) and of zeroes, on disjoint ranges
// whose chunks share stripes, while the small cache pushes: every writer's
// last bytes read back, before and after a Flush and a reopen.
func TestWholeAndPartialWritersTogether(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	opts := e.options("node-a")
	opts.DirtyLimit = 256 << 10 // pushes run while the writers write
	c := e.catalog(opts)
	const bs = 4096
	const chunks = 1200
	if _, err := c.Create(ctx, "vol", chunks*bs, testPolicy(bs)); err != nil {
		t.Fatal(err)
	}
	v := mustOpen(t, c, "vol", false)
	// Regions: three whole-chunk writers of 300 chunks each (more than a
	// batch, starting at different stripes), one writer of unaligned
	// partial writes and one of zeroes and trims.
	type region struct{ from, to int64 } // chunks
	regions := []region{{0, 300}, {300, 600}, {600, 900}, {900, 1100}, {1100, 1200}}
	model := make([]byte, chunks*bs)
	var mu sync.Mutex // guards model
	var wg sync.WaitGroup
	errs := make(chan error, len(regions))
	for w, r := range regions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := range 60 {
				var off, n int64
				var p []byte
				switch {
				case w < 3: // whole chunks, up to the whole region
					k := 2 + rng.Int64N(r.to-r.from-1)
					first := r.from + rng.Int64N(r.to-r.from-k+1)
					off, n = first*bs, k*bs
				default: // anywhere in the region, unaligned
					off = r.from*bs + rng.Int64N((r.to-r.from)*bs-1)
					n = 1 + rng.Int64N(min(r.to*bs-off, 3*bs))
				}
				p = make([]byte, n)
				for j := range p {
					p[j] = byte(w*61 + i + j/bs)
				}
				var err error
				if w == 4 && i%2 == 1 {
					clear(p)
					err = v.WriteZeroes(ctx, off, n, i%4 == 1)
				} else {
					err = v.WriteAt(ctx, p, off)
				}
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				copy(model[off:], p)
				mu.Unlock()
				if i%25 == 0 {
					if err := v.Flush(ctx); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	check := func(v *volumeImpl) {
		t.Helper()
		got := readAll(t, v)
		for ch := int64(0); ch < chunks; ch++ {
			if !bytes.Equal(got[ch*bs:(ch+1)*bs], model[ch*bs:(ch+1)*bs]) {
				t.Fatalf("chunk %d differs from the writes", ch)
			}
		}
	}
	check(v)
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	abandon(v)
	e.hold.Crash()
	check(mustOpen(t, e.catalog(opts), "vol", false))
}
