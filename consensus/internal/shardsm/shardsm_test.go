package shardsm

import (
	"bytes"
	"errors"
	"testing"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

func TestCommandRoundTrip(t *testing.T) {
	for _, c := range []Command{
		{Op: OpSet, ID: [32]byte{1}, Want: 0, Payload: []byte("hello")},
		{Op: OpSet, ID: [32]byte{2}, Want: 7, Payload: []byte{}},
		{Op: OpDelete, ID: [32]byte{3}, Want: 9},
	} {
		got, err := DecodeCommand(c.Encode(nil))
		if err != nil {
			t.Fatalf("decode %+v: %v", c, err)
		}
		if got.Op != c.Op || got.ID != c.ID || got.Want != c.Want || !bytes.Equal(got.Payload, c.Payload) {
			t.Fatalf("round trip: got %+v, want %+v", got, c)
		}
		if c.Op == OpSet && got.Payload == nil {
			t.Fatalf("set decoded with nil payload")
		}
	}
}

func TestDecodeCommandErrors(t *testing.T) {
	good := Command{Op: OpSet, ID: [32]byte{1}, Payload: []byte("x")}.Encode(nil)
	del := Command{Op: OpDelete, ID: [32]byte{1}}.Encode(nil)
	for name, b := range map[string][]byte{
		"empty":           nil,
		"short":           good[:cmdHeader-1],
		"bad format":      append([]byte{9}, good[1:]...),
		"bad op":          append([]byte{1, 7}, good[2:]...),
		"delete+payload":  append(bytes.Clone(del), 1),
		"payload too big": append(bytes.Clone(good), make([]byte, MaxPayload)...),
	} {
		if _, err := DecodeCommand(b); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: got %v, want ErrBadCommand", name, err)
		}
	}
}

func FuzzDecodeCommand(f *testing.F) {
	f.Add(Command{Op: OpSet, ID: [32]byte{1}, Want: 3, Payload: []byte("payload")}.Encode(nil))
	f.Add(Command{Op: OpDelete, ID: [32]byte{2}, Want: 1}.Encode(nil))
	f.Add([]byte{1, 1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			return
		}
		if got := c.Encode(nil); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding differs: %x vs %x", got, b)
		}
	})
}

func snapshotBytes(t testing.TB, applied uint64, vals map[[32]byte]Value, order [][32]byte) []byte {
	var buf bytes.Buffer
	i := 0
	err := WriteSnapshot(&buf, applied, func() ([32]byte, Value, bool, error) {
		if i == len(order) {
			return [32]byte{}, Value{}, false, nil
		}
		id := order[i]
		i++
		return id, vals[id], true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func FuzzReadSnapshot(f *testing.F) {
	ids := [][32]byte{{1}, {2}}
	vals := map[[32]byte]Value{{1}: {Version: 1, Payload: []byte("a")}, {2}: {Version: 5, Payload: []byte{}}}
	f.Add(snapshotBytes(f, 42, vals, ids))
	f.Add(snapshotBytes(f, 0, nil, nil))
	f.Add([]byte("cairnss1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var got [][32]byte
		gotVals := map[[32]byte]Value{}
		applied, err := ReadSnapshot(bytes.NewReader(b), func(id [32]byte, v Value) error {
			got = append(got, id)
			gotVals[id] = Value{Version: v.Version, Payload: bytes.Clone(v.Payload)}
			return nil
		})
		if err != nil {
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("error does not wrap ErrBadCommand: %v", err)
			}
			return
		}
		again := snapshotBytes(t, applied, gotVals, got)
		if !bytes.Equal(again, b[:len(again)]) {
			t.Fatalf("re-encoding differs")
		}
	})
}

func TestStateMachine(t *testing.T) {
	s, err := OpenStore(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := s.NewStateMachine(3, 1)
	if idx, err := m.Open(nil); err != nil || idx != 0 {
		t.Fatalf("open: %d, %v", idx, err)
	}
	id := [32]byte{7}
	ents := []sm.Entry{
		{Index: 1, Cmd: Command{Op: OpSet, ID: id, Want: 0, Payload: []byte("v1")}.Encode(nil)},
		{Index: 2, Cmd: Command{Op: OpSet, ID: id, Want: 0, Payload: []byte("lost")}.Encode(nil)},
		{Index: 3, Cmd: Command{Op: OpSet, ID: id, Want: 1, Payload: []byte("v2")}.Encode(nil)},
		{Index: 4, Cmd: []byte("garbage")},
	}
	out, err := m.Update(ents)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		st  Status
		ver uint64
	}{{StatusOK, 1}, {StatusConflict, 1}, {StatusOK, 2}, {StatusBad, 0}}
	for i, w := range want {
		st, ver, err := DecodeResult(out[i].Result.Value, out[i].Result.Data)
		if err != nil || st != w.st || ver != w.ver {
			t.Errorf("entry %d: %v %d %v, want %v %d", i, st, ver, err, w.st, w.ver)
		}
	}
	v, err := m.Lookup(id)
	if err != nil || v.(Value).Version != 2 || string(v.(Value).Payload) != "v2" {
		t.Fatalf("lookup: %+v %v", v, err)
	}
	if idx, _ := m.Open(nil); idx != 4 {
		t.Fatalf("applied index %d, want 4", idx)
	}
	// Snapshot shard 3 into shard 9 of another store.
	snap, err := m.PrepareSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := m.SaveSnapshot(snap, &buf, nil); err != nil {
		t.Fatal(err)
	}
	s2, err := OpenStore(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	m2 := s2.NewStateMachine(9, 2)
	if _, err := m2.Update([]sm.Entry{{Index: 1, Cmd: Command{Op: OpSet, ID: [32]byte{8}, Payload: []byte("stale")}.Encode(nil)}}); err != nil {
		t.Fatal(err)
	}
	if err := m2.RecoverFromSnapshot(bytes.NewReader(buf.Bytes()), nil); err != nil {
		t.Fatal(err)
	}
	if idx, _ := m2.Open(nil); idx != 4 {
		t.Fatalf("recovered applied index %d, want 4", idx)
	}
	if v, _ := m2.Lookup(id); v.(Value).Version != 2 || string(v.(Value).Payload) != "v2" {
		t.Fatalf("recovered lookup: %+v", v)
	}
	if v, _ := m2.Lookup([32]byte{8}); v.(Value).Version != 0 {
		t.Fatalf("stale block survived recovery: %+v", v)
	}
	// A corrupt snapshot changes nothing.
	bad := bytes.Clone(buf.Bytes())
	bad[len(bad)-1] ^= 1
	if err := m2.RecoverFromSnapshot(bytes.NewReader(bad), nil); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("corrupt snapshot: %v", err)
	}
	if v, _ := m2.Lookup(id); v.(Value).Version != 2 {
		t.Fatalf("after corrupt snapshot: %+v", v)
	}
	if err := m.Sync(); err != nil {
		t.Fatal(err)
	}
}

func TestDropShard(t *testing.T) {
	s, err := OpenStore(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	id := [32]byte{1}
	for _, shard := range []uint64{2, 3} {
		m := s.NewStateMachine(shard, 1)
		if _, err := m.Update([]sm.Entry{{Index: 5, Cmd: Command{Op: OpSet, ID: id, Payload: []byte("x")}.Encode(nil)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DropShard(2); err != nil {
		t.Fatal(err)
	}
	m2, m3 := s.NewStateMachine(2, 1), s.NewStateMachine(3, 1)
	if idx, _ := m2.Open(nil); idx != 0 {
		t.Fatalf("dropped shard: applied %d", idx)
	}
	if v, _ := m2.Lookup(id); v.(Value).Version != 0 {
		t.Fatalf("dropped shard still has %+v", v)
	}
	if v, _ := m3.Lookup(id); v.(Value).Version != 1 {
		t.Fatalf("other shard lost its block: %+v", v)
	}
	s.Close()
	if err := s.DropShard(3); !errors.Is(err, ErrClosed) {
		t.Fatalf("drop after close: %v", err)
	}
}

// TestSnapshotManyBlocks snapshots more blocks than the block cache holds
// (flushed to sstables, so the iterator crosses blocks and the cache
// evicts them): a payload used after the iterator moved past it would be
// overwritten (Pebble poisons freed blocks in race builds).
func TestSnapshotManyBlocks(t *testing.T) {
	s, err := OpenStore(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := s.NewStateMachine(1, 1)
	const n = 3000 // about 12 MiB: more than the block cache holds
	payload := func(i int) []byte { return bytes.Repeat([]byte{byte(i), byte(i >> 8)}, 1900+i%300) }
	var ents []sm.Entry
	for i := 0; i < n; i++ {
		id := [32]byte{byte(i), byte(i >> 8), 1}
		ents = append(ents, sm.Entry{Index: uint64(i + 1), Cmd: Command{Op: OpSet, ID: id, Payload: payload(i)}.Encode(nil)})
	}
	if _, err := m.Update(ents); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Flush(); err != nil {
		t.Fatal(err)
	}
	snap, err := m.PrepareSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := m.SaveSnapshot(snap, &buf, nil); err != nil {
		t.Fatal(err)
	}
	s2, err := OpenStore(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	m2 := s2.NewStateMachine(1, 2)
	if err := m2.RecoverFromSnapshot(&buf, nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		v, err := m2.Lookup([32]byte{byte(i), byte(i >> 8), 1})
		if err != nil || v.(Value).Version != 1 || !bytes.Equal(v.(Value).Payload, payload(i)) {
			t.Fatalf("block %d after recovery: %+v %v", i, v, err)
		}
	}
}
