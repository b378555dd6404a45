package volume

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"cairn/blocks"
	"cairn/policies"
)

// A 1 TiB thin volume opens and serves with the memory of a small one.
func TestThin(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	opts := e.options("node-a")
	c := e.catalog(opts)
	const size = 1 << 40
	if _, err := c.Create(ctx, "big", size, testPolicy(4096)); err != nil {
		t.Fatal(err)
	}
	v := mustOpen(t, c, "big", false)
	n := 2000
	if testing.Short() {
		n = 300
	}
	rng := rand.New(rand.NewPCG(1, 2))
	offs := map[int64]bool{}
	for len(offs) < n {
		offs[rng.Int64N(size/SectorSize-16)*SectorSize] = true
	}
	stamp := func(off int64) []byte {
		p := make([]byte, 4096)
		for i := 0; i < len(p); i += 8 {
			binary.BigEndian.PutUint64(p[i:], uint64(off)+uint64(i))
		}
		return p
	}
	// Unaligned 4 KiB writes: most straddle two chunks.
	for off := range offs {
		if err := v.WriteAt(ctx, stamp(off), off); err != nil {
			t.Fatal(err)
		}
	}
	// Overlaps make the last writer win; verify against a re-read model:
	// write them in sorted order once more so the expected content is clear.
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	held := e.hold.Bytes()
	t.Logf("%d scattered writes on a 1 TiB volume: %d bytes held", n, held)

	opts.CacheBytes = 1 << 20
	c2 := e.catalog(opts)
	v = mustOpen(t, c2, "big", false)
	got := make([]byte, 4096)
	checked := 0
	for off := range offs {
		// Skip writes another (possibly later) write overlapped.
		overlapped := false
		for o := off - 4095; o < off+4096; o += SectorSize {
			if o != off && offs[o] {
				overlapped = true
				break
			}
		}
		if overlapped {
			continue
		}
		if err := v.ReadAt(ctx, got, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, stamp(off)) {
			t.Fatalf("read at %d differs from what was written", off)
		}
		checked++
	}
	st := v.m.CacheStats()
	t.Logf("checked %d reads; chunk map cache: %+v", checked, st)
	if st.Bytes > opts.CacheBytes {
		t.Fatalf("chunk map cache holds %d bytes, limit %d", st.Bytes, opts.CacheBytes)
	}
	if checked < n/2 {
		t.Fatalf("only %d of %d writes checked", checked, n)
	}
	var data int64
	if err := v.Extents(ctx, 0, size, func(off, l int64, hole bool) error {
		if !hole {
			data += l
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if data == 0 || data > int64(2*n)*4096 {
		t.Fatalf("extents report %d data bytes for %d 4 KiB writes", data, n)
	}
	in, err := c2.Inspect(ctx, "big")
	if err != nil || in.Written != data {
		t.Fatalf("inspect written %d (err %v), extents say %d", in.Written, err, data)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestGarbageCollection(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	c := e.catalog(e.options("node-a"))
	if _, err := c.Create(ctx, "vol", 1<<20, testPolicy(4096)); err != nil {
		t.Fatal(err)
	}
	v := mustOpen(t, c, "vol", false)
	fill := func(b byte) []byte {
		p := make([]byte, 1<<20)
		for i := range p {
			p[i] = byte(i / 4096)
			if i%4096 < 2 {
				p[i] = b // distinct per fill: no dedup between fills
			}
		}
		return p
	}
	for _, b := range []byte{1, 2} {
		if err := v.WriteAt(ctx, fill(b), 0); err != nil {
			t.Fatal(err)
		}
		if err := v.checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Snapshot(ctx, "vol", "snap"); err != nil {
		t.Fatal(err)
	}
	// Overwrite again, flushed but not checkpointed: live through the journal.
	if err := v.WriteAt(ctx, fill(3), 0); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// And some unflushed writes still in memory.
	if err := v.WriteAt(ctx, fill(4)[:64<<10], 0); err != nil {
		t.Fatal(err)
	}
	want := fill(3)
	copy(want, fill(4)[:64<<10])

	// A writer keeps writing during the collection.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var werr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p := fill(byte(10 + i%3))[:4096]
			if err := v.WriteAt(ctx, p, 1<<19); err != nil {
				werr = err
				return
			}
			copy(want[1<<19:], p) // read back only after wg.Wait
			if err := v.Flush(ctx); err != nil {
				werr = err
				return
			}
		}
	}()
	st, err := c.CollectGarbage(ctx, casStore{e.hold}.h.Walk)
	close(stop)
	wg.Wait()
	if err != nil || werr != nil {
		t.Fatal(err, werr)
	}
	t.Logf("gc: %+v", st)
	if st.Swept == 0 || st.Marked == 0 {
		t.Fatalf("gc %+v: want marked and swept blocks", st)
	}
	check := func(c *Catalogue, name string, want []byte) {
		t.Helper()
		var r *volumeImpl
		if name == "vol" && v != nil {
			r = v
		} else {
			r = mustOpen(t, c, name, false)
			defer r.Close(ctx)
		}
		if got := readAll(t, r); !bytes.Equal(got, want) {
			t.Fatalf("%s: data differs after gc", name)
		}
	}
	check(c, "vol", want)
	check(c, "snap", fill(2))
	// A crash after gc: the flushed data is all there (journal blocks kept).
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	abandon(v)
	v = nil
	e.hold.Crash()
	c = e.catalog(e.options("node-a"))
	check(c, "vol", want)
	check(c, "snap", fill(2))
	// A second collection after a clean close finds the overwritten blocks.
	st2, err := c.CollectGarbage(ctx, e.hold.Walk)
	if err != nil {
		t.Fatal(err)
	}
	check(c, "vol", want)
	check(c, "snap", fill(2))
	in, err := c.Inspect(ctx, "vol")
	if err != nil || in.Written != 1<<20 || in.Stored <= 0 || in.Stored > 1<<20 {
		t.Fatalf("inspect after gc: %+v, %v", in, err)
	}
	// Deleting the volume and its snapshot frees everything.
	for _, n := range []string{"vol", "snap"} {
		if err := c.Delete(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	st3, err := c.CollectGarbage(ctx, e.hold.Walk)
	if err != nil {
		t.Fatal(err)
	}
	left := 0
	e.hold.Walk(ctx, func(blocks.Addr) error { left++; return nil })
	t.Logf("gc 2: %+v; after delete: %+v, %d blocks left", st2, st3, left)
	if left != 0 || st3.Marked != 0 {
		t.Fatalf("after deleting every volume %d blocks are left (marked %d)", left, st3.Marked)
	}
}

func TestCatalogOperations(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	c := e.catalog(e.options("node-a"))
	p := testPolicy(4096)
	p.Keep = 2
	if _, err := c.Create(ctx, "src", 64<<10, p); err != nil {
		t.Fatal(err)
	}
	v := mustOpen(t, c, "src", false)
	one := bytes.Repeat([]byte{7}, 64<<10)
	if err := v.WriteAt(ctx, one, 0); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Snapshot of a closed volume, then clone it and write to the clone.
	if err := c.Snapshot(ctx, "src", "snap"); err != nil {
		t.Fatal(err)
	}
	if err := c.Clone(ctx, "snap", "clone"); err != nil {
		t.Fatal(err)
	}
	cl := mustOpen(t, c, "clone", false)
	if cl.ReadOnly() {
		t.Fatal("clone is read-only")
	}
	if got := readAll(t, cl); !bytes.Equal(got, one) {
		t.Fatal("clone does not hold the snapshot's data")
	}
	if err := cl.WriteAt(ctx, []byte{9}, 0); err != nil {
		t.Fatal(err)
	}
	if err := cl.Close(ctx); err != nil {
		t.Fatal(err)
	}
	s := mustOpen(t, c, "snap", false)
	if got := readAll(t, s); !bytes.Equal(got, one) {
		t.Fatal("writing the clone changed the snapshot")
	}
	if err := s.WriteAt(ctx, []byte{1}, 0); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write to snapshot = %v, want ErrReadOnly", err)
	}
	s.Close(ctx)

	// Resize a closed volume: shrink drops the tail, grow reads zeros there.
	if err := c.Resize(ctx, "src", 10*1024+512); err != nil {
		t.Fatal(err)
	}
	if err := c.Resize(ctx, "src", 128<<10); err != nil {
		t.Fatal(err)
	}
	v = mustOpen(t, c, "src", false)
	want := make([]byte, 128<<10)
	copy(want, one[:10*1024+512])
	if got := readAll(t, v); !bytes.Equal(got, want) {
		t.Fatal("shrink then grow did not zero the dropped range")
	}
	// Resize in place while open.
	if err := c.Resize(ctx, "src", 256<<10); err != nil {
		t.Fatal(err)
	}
	if v.Size() != 256<<10 {
		t.Fatalf("open volume size %d after resize", v.Size())
	}
	if err := v.WriteAt(ctx, []byte{5}, 256<<10-1); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}

	list, err := c.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, in := range list {
		names = append(names, fmt.Sprintf("%s:%v:%s", in.Name, in.ReadOnly, in.Parent))
	}
	if got := strings.Join(names, " "); got != "clone:false:snap snap:true:src src:false:" {
		t.Fatalf("list = %s", got)
	}
	r, _, err := c.loadRoot(ctx, mustID(t, c, "src"))
	if err != nil || len(r.Kept) == 0 || len(r.Kept) > 2 {
		t.Fatalf("kept versions %d (err %v), want 1..2 with keep = 2", len(r.Kept), err)
	}
	if err := c.Delete(ctx, "clone"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Inspect(ctx, "clone"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("inspect deleted = %v, want ErrNotFound", err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Open(ctx, "src", OpenOptions{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("open on closed catalogue = %v, want ErrClosed", err)
	}
}

func mustID(t *testing.T, c *Catalogue, name string) blocks.ID {
	t.Helper()
	id, err := c.lookup(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestBadRequests(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	c := e.catalog(e.options("node-a"))
	if _, err := c.Create(ctx, "vol", 1<<20, testPolicy(4096)); err != nil {
		t.Fatal(err)
	}
	if err := c.Snapshot(ctx, "vol", "snap"); err != nil {
		t.Fatal(err)
	}
	v := mustOpen(t, c, "vol", false)
	defer v.Close(ctx)
	bad := testPolicy(3000)
	for _, tc := range []struct {
		name string
		err  error
		is   error
		msg  string
	}{
		{"empty name", createErr(c, "", 512, testPolicy(4096)), ErrInvalid, `volume name is empty; write 1 to 64 characters`},
		{"long name", createErr(c, strings.Repeat("a", 65), 512, testPolicy(4096)), ErrInvalid, "is 65 characters long; write at most 64"},
		{"upper case", createErr(c, "Data", 512, testPolicy(4096)), ErrInvalid, `names are lower-case, write "data"`},
		{"bad char", createErr(c, "a/b", 512, testPolicy(4096)), ErrInvalid, `has the character '/' at 1; use only a-z, 0-9, '.', '_' and '-'`},
		{"dot", createErr(c, "..", 512, testPolicy(4096)), ErrInvalid, "is reserved"},
		{"zero size", createErr(c, "x", 0, testPolicy(4096)), ErrInvalid, "size 0 is not positive; give a size such as 10GiB"},
		{"odd size", createErr(c, "x", 1000, testPolicy(4096)), ErrInvalid, "size 1000 is not a multiple of 512 bytes; round it to 1024"},
		{"bad block size", createErr(c, "x", 4096, bad), ErrInvalid, `block size 3000B is not a power of two between 512B and 4MiB`},
		{"exists", createErr(c, "vol", 4096, testPolicy(4096)), ErrExists, `volume "vol": volume: a volume with that name already exists; pick another name or delete it first`},
		{"open missing", openErr(c, "nope"), ErrNotFound, `volume "nope": volume: no such volume`},
		{"read past end", v.ReadAt(ctx, make([]byte, 2), 1<<20-1), ErrOutOfRange, `[1048575, +2) outside [0, 1048576)`},
		{"write negative", v.WriteAt(ctx, []byte{1}, -1), ErrOutOfRange, "[-1, +1)"},
		{"trim past end", v.Trim(ctx, 1<<20, 1), ErrOutOfRange, "outside"},
		{"zero past end", v.WriteZeroes(ctx, 0, 1<<20+1, false), ErrOutOfRange, "outside"},
		{"extents past end", v.Extents(ctx, 0, 1<<21, nil), ErrOutOfRange, "outside"},
		{"clone writable", c.Clone(ctx, "vol", "c2"), ErrInvalid, "take a snapshot of it first"},
		{"resize snapshot", c.Resize(ctx, "snap", 1<<21), ErrReadOnly, "a snapshot cannot be resized; clone it first"},
		{"resize odd", c.Resize(ctx, "vol", 777), ErrInvalid, "round it to 1024"},
		{"delete open", c.Delete(ctx, "vol"), ErrAttached, "close it first"},
		{"snapshot exists", c.Snapshot(ctx, "vol", "snap"), ErrExists, "already exists"},
	} {
		if !errors.Is(tc.err, tc.is) {
			t.Errorf("%s: error %v, want %v", tc.name, tc.err, tc.is)
			continue
		}
		if !strings.Contains(tc.err.Error(), tc.msg) {
			t.Errorf("%s: error %q does not say %q", tc.name, tc.err, tc.msg)
		}
	}
	if _, err := NewCatalog(ctx, Options{}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "Options.Mutable is required") {
		t.Errorf("empty options = %v", err)
	}
}

func createErr(c *Catalogue, name string, size int64, p policies.Policy) error {
	_, err := c.Create(context.Background(), name, size, p)
	return err
}

func openErr(c *Catalogue, name string) error {
	_, err := c.Open(context.Background(), name, OpenOptions{})
	return err
}

// Concurrent writers on disjoint ranges, with concurrent Flushes.
func TestConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	opts := e.options("node-a")
	opts.DirtyLimit = 64 << 10
	c := e.catalog(opts)
	if _, err := c.Create(ctx, "vol", 1<<20, testPolicy(4096)); err != nil {
		t.Fatal(err)
	}
	v := mustOpen(t, c, "vol", false)
	const workers = 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			base := int64(w) * (1 << 20 / workers)
			for i := 0; i < 200; i++ {
				p := bytes.Repeat([]byte{byte(w*31 + i)}, 1000)
				off := base + int64(i%100)*1000 // unaligned, chunks shared with neighbours
				if err := v.WriteAt(ctx, p, off); err != nil {
					errs <- err
					return
				}
				if i%10 == 0 {
					if err := v.Flush(ctx); err != nil {
						errs <- err
						return
					}
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	check := func(v *volumeImpl) {
		t.Helper()
		got := readAll(t, v)
		for w := 0; w < workers; w++ {
			base := w * (1 << 20 / workers)
			for i := 100; i < 200; i++ {
				off := base + (i%100)*1000
				if !bytes.Equal(got[off:off+1000], bytes.Repeat([]byte{byte(w*31 + i)}, 1000)) {
					t.Fatalf("worker %d write %d lost", w, i)
				}
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
	_ = time.Second
}

func TestExtents(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	c := e.catalog(e.options("node-a"))
	if _, err := c.Create(ctx, "vol", 8*4096, testPolicy(4096)); err != nil {
		t.Fatal(err)
	}
	v := mustOpen(t, c, "vol", false)
	defer v.Close(ctx)
	// Chunks 1 and 2 flushed, 5 dirty, 2 then trimmed (dirty hole), 6 zeroed without trim.
	if err := v.WriteAt(ctx, make([]byte, 2*4096), 4096); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, []byte{1}, 5*4096+100); err != nil {
		t.Fatal(err)
	}
	if err := v.Trim(ctx, 2*4096, 4096); err != nil {
		t.Fatal(err)
	}
	if err := v.WriteZeroes(ctx, 6*4096, 4096, false); err != nil {
		t.Fatal(err)
	}
	var got []string
	err := v.Extents(ctx, 512, 8*4096-1024, func(off, n int64, hole bool) error {
		got = append(got, fmt.Sprintf("%d+%d:%v", off, n, hole))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "512+3584:true 4096+4096:false 8192+12288:true 20480+8192:false 28672+3584:true"
	if g := strings.Join(got, " "); g != want {
		t.Fatalf("extents\n got %s\nwant %s", g, want)
	}
}
