package sealed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"cairn/blocks"
	"cairn/blocks/blockstest"
	"cairn/blocks/memory"
	"cairn/blocks/redundant"
	"cairn/policies"
)

var (
	ciphers      = []policies.Cipher{policies.CipherNone, policies.CipherAES256, policies.CipherXChaCha}
	compressions = []policies.Compression{policies.CompressionNone, policies.CompressionLZ4}
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, KeySize) }

// combos returns every cipher x compression x dedup combination.
func combos() []Options {
	var out []Options
	for _, c := range ciphers {
		for _, z := range compressions {
			for _, d := range []bool{false, true} {
				o := Options{Compression: z, Cipher: c, Dedup: d}
				if c != policies.CipherNone {
					o.Key = key(1)
				}
				out = append(out, o)
			}
		}
	}
	return out
}

func name(o Options) string {
	return fmt.Sprintf("%s/%s/dedup=%v", o.Cipher, o.Compression, o.Dedup)
}

// stack is a sealed store over a redundant store over memory holders.
type stack struct {
	s    *Store
	mems []*memory.Store
}

// newStack builds the pipeline: 4+2 erasure coding on 6 holders when ec,
// else 3 replicas on 3 holders.
func newStack(t testing.TB, o Options, ec bool) *stack {
	t.Helper()
	st := &stack{}
	n := 3
	ro := redundant.Options{Replicas: 3}
	if ec {
		n, ro = 6, redundant.Options{Data: 4, Parity: 2}
	}
	var hs []blocks.Holder
	for range n {
		m := memory.New(0)
		st.mems = append(st.mems, m)
		hs = append(hs, m)
	}
	ro.Holders = func(blocks.Addr, int) []blocks.Holder { return hs }
	ro.All = func() []blocks.Holder { return hs }
	r, err := redundant.New(ro)
	if err != nil {
		t.Fatal(err)
	}
	st.s, err = New(r, o)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestConformance(t *testing.T) {
	for i, o := range combos() {
		t.Run(name(o), func(t *testing.T) {
			newStore := func(t testing.TB) blocks.Store { return newStack(t, o, i%2 == 0).s }
			random := o.Cipher != policies.CipherNone && !o.Dedup
			blockstest.RunStoreWith(t, newStore, blockstest.StoreOptions{RandomAddrs: random})
		})
	}
}

// rawStore is a blocks.Store that verifies nothing, so tests can hand the
// sealed store any bytes.
type rawStore struct {
	mu sync.Mutex
	m  map[blocks.Addr][]byte
}

func newRaw() *rawStore { return &rawStore{m: map[blocks.Addr][]byte{}} }

func (r *rawStore) Put(_ context.Context, data []byte) (blocks.Addr, error) {
	a := blocks.Sum(data)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m[a] = bytes.Clone(data)
	return a, nil
}

func (r *rawStore) Get(_ context.Context, a blocks.Addr) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.m[a]
	if !ok {
		return nil, blocks.ErrNotFound
	}
	return bytes.Clone(p), nil
}

func (r *rawStore) Has(_ context.Context, a blocks.Addr) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.m[a]
	return ok, nil
}

func (r *rawStore) Delete(_ context.Context, a blocks.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m, a)
	return nil
}

func (r *rawStore) Sync(context.Context) error { return nil }

func (r *rawStore) set(a blocks.Addr, p []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m[a] = p
}

func TestDedup(t *testing.T) {
	ctx := t.Context()
	data := blockstest.Compressible(1, 8192)
	for _, c := range ciphers[1:] {
		for _, z := range compressions {
			t.Run(fmt.Sprintf("%s/%s", c, z), func(t *testing.T) {
				inner := newRaw()
				put := func(k []byte, dedup bool) blocks.Addr {
					s, err := New(inner, Options{Compression: z, Cipher: c, Key: k, Dedup: dedup})
					if err != nil {
						t.Fatal(err)
					}
					a, err := s.Put(ctx, data)
					if err != nil {
						t.Fatal(err)
					}
					checkGet(t, s, a, data)
					return a
				}
				a1, a2 := put(key(1), true), put(key(1), true)
				if a1 != a2 {
					t.Errorf("dedup, same key: addrs %v and %v differ", a1, a2)
				}
				if b := put(key(2), true); b == a1 {
					t.Errorf("dedup, other key: same addr %v", b)
				}
				if n1, n2 := put(key(1), false), put(key(1), false); n1 == n2 || n1 == a1 {
					t.Errorf("no dedup: addrs %v, %v (dedup's %v): want all different", n1, n2, a1)
				}
			})
		}
	}
}

// TestNoPlaintextInPieces puts a block with a recognisable pattern and
// checks that no piece on any holder contains it.
func TestNoPlaintextInPieces(t *testing.T) {
	marker := []byte("CAIRN-SECRET-MARKER-0123456789")
	data := bytes.Repeat(marker, 1000)
	for _, o := range combos() {
		if o.Cipher == policies.CipherNone {
			continue
		}
		for _, ec := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/ec=%v", name(o), ec), func(t *testing.T) {
				st := newStack(t, o, ec)
				a, err := st.s.Put(t.Context(), data)
				if err != nil {
					t.Fatal(err)
				}
				pieces := 0
				for _, m := range st.mems {
					err := m.Walk(t.Context(), func(k blocks.Addr) error {
						p, err := m.GetPiece(t.Context(), k)
						if err != nil {
							return err
						}
						pieces++
						if bytes.Contains(p, marker[:16]) {
							return fmt.Errorf("piece %v contains the plaintext", k)
						}
						return nil
					})
					if err != nil {
						t.Fatal(err)
					}
				}
				if pieces == 0 {
					t.Fatal("no pieces found")
				}
				checkGet(t, st.s, a, data)
			})
		}
	}
	// The check itself works: without a cipher the marker is there.
	st := newStack(t, Options{}, false)
	if _, err := st.s.Put(t.Context(), data); err != nil {
		t.Fatal(err)
	}
	found := false
	_ = st.mems[0].Walk(t.Context(), func(k blocks.Addr) error {
		p, _ := st.mems[0].GetPiece(t.Context(), k)
		found = found || bytes.Contains(p, marker)
		return nil
	})
	if !found {
		t.Fatal("the marker is not found even without encryption")
	}
}

// TestTampered flips every bit position class of a sealed block in turn:
// Get must fail with ErrCorrupt, never return other bytes.
func TestTampered(t *testing.T) {
	for _, o := range combos() {
		if o.Cipher == policies.CipherNone {
			continue
		}
		t.Run(name(o), func(t *testing.T) {
			inner := newRaw()
			s, err := New(inner, o)
			if err != nil {
				t.Fatal(err)
			}
			data := blockstest.Compressible(3, 5000)
			a, err := s.Put(t.Context(), data)
			if err != nil {
				t.Fatal(err)
			}
			orig, _ := inner.Get(t.Context(), a)
			for i := range orig {
				for _, bit := range []byte{0x01, 0x80} {
					c := bytes.Clone(orig)
					c[i] ^= bit
					inner.set(a, c)
					if got, err := s.Get(t.Context(), a); !errors.Is(err, blocks.ErrCorrupt) {
						t.Fatalf("byte %d ^ %#x: Get = %d bytes, %v; want ErrCorrupt", i, bit, len(got), err)
					}
				}
			}
			for _, c := range [][]byte{nil, orig[:1], orig[:len(orig)-1], append(bytes.Clone(orig), 0)} {
				inner.set(a, c)
				if _, err := s.Get(t.Context(), a); !errors.Is(err, blocks.ErrCorrupt) {
					t.Fatalf("%d of %d bytes: %v, want ErrCorrupt", len(c), len(orig), err)
				}
			}
		})
	}
}

// TestOtherKey checks that a block sealed under one key does not open
// under another (one volume's blocks are unreadable with another's key).
func TestOtherKey(t *testing.T) {
	inner := newRaw()
	s1, _ := New(inner, Options{Cipher: policies.CipherXChaCha, Key: key(1)})
	s2, _ := New(inner, Options{Cipher: policies.CipherXChaCha, Key: key(2)})
	s3, _ := New(inner, Options{Cipher: policies.CipherAES256, Key: key(1)})
	a, err := s1.Put(t.Context(), []byte("volume one"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*Store{s2, s3} {
		if _, err := s.Get(t.Context(), a); !errors.Is(err, blocks.ErrCorrupt) {
			t.Fatalf("Get under another key or cipher: %v, want ErrCorrupt", err)
		}
	}
}

func TestSizes(t *testing.T) {
	ctx := t.Context()
	for _, tc := range []struct {
		o      Options
		data   []byte
		stored int
	}{
		{Options{}, []byte("abc"), 4},
		{Options{}, nil, 1},
		{Options{Compression: policies.CompressionLZ4}, blockstest.Random(1, 100), 101}, // incompressible: raw
		{Options{Compression: policies.CompressionLZ4}, []byte("aaaaa"), 6},             // too short to pay
		{Options{Cipher: policies.CipherAES256, Key: key(1)}, []byte("abc"), 1 + 12 + 3 + 16},
		{Options{Cipher: policies.CipherXChaCha, Key: key(1)}, nil, 1 + 24 + 16},
	} {
		s, err := New(newRaw(), tc.o)
		if err != nil {
			t.Fatal(err)
		}
		a, n, err := s.PutSized(ctx, tc.data)
		if err != nil || n != tc.stored {
			t.Errorf("%v: PutSized(%d bytes) = %d, %v; want %d", tc.o, len(tc.data), n, err, tc.stored)
		}
		checkGet(t, s, a, tc.data)
	}
	// Compressible data shrinks, and the size is what the inner store holds.
	inner := newRaw()
	s, _ := New(inner, Options{Compression: policies.CompressionLZ4, Cipher: policies.CipherAES256, Key: key(1)})
	data := blockstest.Compressible(1, 1<<20)
	a, n, err := s.PutSized(ctx, data)
	if err != nil || n >= len(data)/4 {
		t.Fatalf("PutSized(1 MiB of text) = %d, %v; want it compressed", n, err)
	}
	if c, _ := inner.Get(ctx, a); len(c) != n {
		t.Fatalf("PutSized said %d bytes, the inner store holds %d", n, len(c))
	}
	checkGet(t, s, a, data)
	// Above MaxBlock: refused.
	if _, err := s.Put(ctx, make([]byte, blocks.MaxBlock+1)); !errors.Is(err, blocks.ErrTooLarge) {
		t.Fatalf("Put(MaxBlock+1): %v, want ErrTooLarge", err)
	}
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		o  Options
		ok bool
	}{
		{Options{}, true},
		{Options{Compression: "lz4", Cipher: "none"}, true},
		{Options{Compression: "zstd"}, false},
		{Options{Cipher: "rot13", Key: key(1)}, false},
		{Options{Cipher: policies.CipherAES256}, false},
		{Options{Cipher: policies.CipherAES256, Key: key(1)[:16]}, false},
		{Options{Cipher: policies.CipherXChaCha, Key: key(1), Dedup: true}, true},
	} {
		_, err := New(newRaw(), tc.o)
		if (err == nil) != tc.ok {
			t.Errorf("New(%+v) = %v, want ok %v", tc.o, err, tc.ok)
		}
	}
}

// TestRedundancyBelow checks the whole pipeline repairs a lost piece.
func TestRedundancyBelow(t *testing.T) {
	st := newStack(t, Options{Cipher: policies.CipherAES256, Key: key(1), Compression: policies.CompressionLZ4}, true)
	data := blockstest.Compressible(1, 100000)
	a, err := st.s.Put(t.Context(), data)
	if err != nil {
		t.Fatal(err)
	}
	st.mems[0].Corrupt(blocks.PieceKey(a, 0))
	st.mems[1].Corrupt(blocks.PieceKey(a, 1))
	checkGet(t, st.s, a, data)
}

func checkGet(t testing.TB, s blocks.Getter, a blocks.Addr, want []byte) {
	t.Helper()
	got, err := s.Get(context.Background(), a)
	if err != nil {
		t.Fatalf("Get(%v): %v", a, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get(%v): %d other bytes, want %d", a, len(got), len(want))
	}
}
