package peer

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"cairn/blocks"
	"cairn/blocks/memory"
)

// hasPiecesSetup stores every other one of n keys in a memory store and
// returns the store, the keys and which of them it holds.
func hasPiecesSetup(t *testing.T, n int) (*memory.Store, []blocks.Addr, []bool) {
	t.Helper()
	store := memory.New(0)
	keys := make([]blocks.Addr, n)
	want := make([]bool, n)
	for i := range keys {
		keys[i] = blocks.Sum([]byte(fmt.Sprint("piece ", i)))
		if i%2 == 0 || i == n-1 {
			want[i] = true
			if err := store.PutPiece(t.Context(), keys[i], []byte{byte(i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return store, keys, want
}

// TestHasPieces: HasPieces answers for each key whether the holder has
// it, a list longer than MaxHasPieces in several requests, and asks
// nothing for an empty list (past the first call's probe).
func TestHasPieces(t *testing.T) {
	ctx := testCtx(t)
	n := MaxHasPieces + 905
	store, keys, want := hasPiecesSetup(t, n)
	ts := startServer(t, store, "")
	c := newClient(t, ts.addr)
	before := ts.srv.Stats().Requests
	got, err := c.HasPieces(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("%d answers for %d keys", len(got), n)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("key %d: has %v, want %v", i, got[i], want[i])
		}
	}
	if r := ts.srv.Stats().Requests - before; r != 3 {
		t.Errorf("%d requests for %d keys, want 3 (the probe, then %d keys at most per request)", r, n, MaxHasPieces)
	}
	if got, err := c.HasPieces(ctx, nil); err != nil || len(got) != 0 {
		t.Fatalf("HasPieces of no key: %v, %v", got, err)
	}
	if r := ts.srv.Stats().Requests - before; r != 3 {
		t.Errorf("HasPieces of no key sent %d requests", r-3)
	}
}

// TestHasPiecesOlderServer: against a server that predates op 21, the
// probe gets status 8 and HasPieces asks HasPiece for each key instead,
// with the same answers.
func TestHasPiecesOlderServer(t *testing.T) {
	ctx := testCtx(t)
	store, keys, want := hasPiecesSetup(t, 37)
	addr, refused := startOldServer(t, store)
	c := newClient(t, addr)
	for range 2 {
		got, err := c.HasPieces(ctx, keys)
		if err != nil {
			t.Fatalf("HasPieces against an older server: %v", err)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("key %d: has %v, want %v", i, got[i], want[i])
			}
		}
	}
	if k := refused[opHasPieces].Load(); k != 1 {
		t.Fatalf("the older server refused %d HasPieces frames, want 1 (the probe)", k)
	}
}

// TestHasPiecesWire: the request and the bitmap decode what was encoded;
// a count that does not match the payload, a count over MaxHasPieces, and
// a reply of the wrong length or with bits past the count set are
// malformed.
func TestHasPiecesWire(t *testing.T) {
	keys := []blocks.Addr{{1}, {2}, {3}}
	p := encodeHasPieces(keys)
	got, err := decodeHasPieces(p)
	if err != nil || len(got) != 3 || got[2] != keys[2] {
		t.Fatalf("decode: %v %v", got, err)
	}
	if got, err := decodeHasPieces(nil); err != nil || got != nil {
		t.Fatalf("probe: %v %v", got, err)
	}
	for _, bad := range [][]byte{
		{0},
		{0, 0},
		p[:len(p)-1],
		append(bytes.Clone(p), 0),
		append([]byte{0x10, 0x01}, make([]byte, 32*(MaxHasPieces+1))...),
	} {
		if _, err := decodeHasPieces(bad); err == nil {
			t.Errorf("request of %d bytes decoded", len(bad))
		}
	}
	has := []bool{true, false, false, true, false, false, false, false, true, true}
	b := encodeHasBitmap(has)
	if len(b) != 2 {
		t.Fatalf("bitmap of %d bytes for 10 keys", len(b))
	}
	back, err := decodeHasBitmap(b, len(has))
	if err != nil || fmt.Sprint(back) != fmt.Sprint(has) {
		t.Fatalf("bitmap: %v %v", back, err)
	}
	for _, bad := range []struct {
		p []byte
		n int
	}{{b, 9}, {b, 17}, {[]byte{0x01, 0x04}, 10}, {nil, 1}} {
		if _, err := decodeHasBitmap(bad.p, bad.n); err == nil {
			t.Errorf("bitmap %x for %d keys decoded", bad.p, bad.n)
		}
	}
}

// TestGetAnyPiece: GetAnyPiece returns the piece of the first key, in
// the request's order, that the holder has, in one request (past the
// first call's probe); not found when it has none; and refuses a list
// longer than MaxAnyPiece without asking.
func TestGetAnyPiece(t *testing.T) {
	ctx := testCtx(t)
	store, keys, _ := hasPiecesSetup(t, 5) // holds keys 0, 2 and 4
	ts := startServer(t, store, "")
	c := newClient(t, ts.addr)
	before := ts.srv.Stats().Requests
	for _, tc := range []struct {
		ask  []blocks.Addr
		want byte
	}{
		{[]blocks.Addr{keys[1], keys[2], keys[0]}, 2},
		{[]blocks.Addr{keys[4]}, 4},
		{[]blocks.Addr{keys[3], keys[1], keys[0]}, 0},
	} {
		p, err := c.GetAnyPiece(ctx, tc.ask)
		if err != nil || !bytes.Equal(p, []byte{tc.want}) {
			t.Fatalf("GetAnyPiece: %x, %v; want the piece of key %d", p, err, tc.want)
		}
	}
	if _, err := c.GetAnyPiece(ctx, []blocks.Addr{keys[1], keys[3]}); !errors.Is(err, blocks.ErrNotFound) {
		t.Fatalf("GetAnyPiece of keys the holder lacks: %v, want not found", err)
	}
	if r := ts.srv.Stats().Requests - before; r != 5 {
		t.Errorf("%d requests for 4 calls, want 5 (the probe, then one each)", r)
	}
	if _, err := c.GetAnyPiece(ctx, make([]blocks.Addr, MaxAnyPiece+1)); err == nil {
		t.Fatal("GetAnyPiece of too many keys: no error")
	}
	if _, err := c.GetAnyPiece(ctx, nil); err == nil {
		t.Fatal("GetAnyPiece of no key: no error")
	}
	if r := ts.srv.Stats().Requests - before; r != 5 {
		t.Errorf("refused calls sent %d requests", r-5)
	}
}

// TestGetAnyPieceOlderServer: against a server that predates op 22, the
// probe gets status 8 and GetAnyPiece asks GetPiece for each key in turn,
// with the same answers.
func TestGetAnyPieceOlderServer(t *testing.T) {
	ctx := testCtx(t)
	store, keys, _ := hasPiecesSetup(t, 5)
	addr, refused := startOldServer(t, store)
	c := newClient(t, addr)
	for range 2 {
		p, err := c.GetAnyPiece(ctx, []blocks.Addr{keys[3], keys[2]})
		if err != nil || !bytes.Equal(p, []byte{2}) {
			t.Fatalf("GetAnyPiece against an older server: %x, %v", p, err)
		}
		if _, err := c.GetAnyPiece(ctx, []blocks.Addr{keys[1]}); !errors.Is(err, blocks.ErrNotFound) {
			t.Fatalf("GetAnyPiece of a key the older server lacks: %v", err)
		}
	}
	if k := refused[opGetAnyPiece].Load(); k != 1 {
		t.Fatalf("the older server refused %d GetAnyPiece frames, want 1 (the probe)", k)
	}
}

// TestGetAnyPieceWire: the request decodes what was encoded; a count
// that does not match the payload, a zero count and a count over
// MaxAnyPiece are malformed.
func TestGetAnyPieceWire(t *testing.T) {
	keys := []blocks.Addr{{1}, {2}, {3}}
	p := encodeGetAnyPiece(keys)
	got, err := decodeGetAnyPiece(p)
	if err != nil || len(got) != 3 || got[2] != keys[2] {
		t.Fatalf("decode: %v %v", got, err)
	}
	if got, err := decodeGetAnyPiece(nil); err != nil || got != nil {
		t.Fatalf("probe: %v %v", got, err)
	}
	for _, bad := range [][]byte{
		{0},
		{1},
		p[:len(p)-1],
		append(bytes.Clone(p), 0),
		append([]byte{MaxAnyPiece + 1}, make([]byte, 32*(MaxAnyPiece+1))...),
	} {
		if _, err := decodeGetAnyPiece(bad); err == nil {
			t.Errorf("request of %d bytes decoded", len(bad))
		}
	}
}
