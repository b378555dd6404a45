package volume

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"cairn/blocks"
	"cairn/policies"
	"cairn/volume/chunkmap"
)

// Format constants (see doc.go for the layouts). Changing any of them
// changes the stored format.
const (
	rootMagic    = "CRNV"
	rootVersion  = 1
	catMagic     = "CRNC"
	catVersion   = 1
	recVersion   = 1
	recEntrySize = 8 + 32
	recHeader    = 1 + 4
	// maxRecEntries is how many chunk changes fit in one journal record.
	maxRecEntries = (blocks.MaxRecord - recHeader) / recEntrySize
	maxKept       = 4096
	maxNameLen    = 64
	maxStr        = 1 << 12
	maxKeyBlob    = 1 << 10
)

// catalogID is the mutable block holding the catalogue.
var catalogID = blocks.NameID("cairn/catalog")

// errMalformed marks every decode error of a stored payload.
var errMalformed = fmt.Errorf("malformed: %w", blocks.ErrCorrupt)

// keptVersion is one kept checkpoint of the chunk map (policy Keep).
type keptVersion struct {
	MapRoot blocks.Addr
	Size    int64
	Seq     uint64 // the checkpointSeq it was taken at
	At      time.Time
}

// rootRecord is the decoded volume root (the mutable block at the volume's ID).
type rootRecord struct {
	Name          string
	Size          int64
	Policy        policies.Policy
	Created       time.Time
	Parent        string
	ReadOnly      bool
	MapRoot       blocks.Addr
	Chunks        uint64
	PageEntries   int // the chunk map's entries per page (fixed at creation)
	CheckpointSeq uint64
	Epoch         blocks.Epoch
	LeaseOwner    string
	LeaseExpiry   time.Time // zero: no lease
	WrappedKey    []byte
	Kept          []keptVersion
	Allocated     uint64 // chunks mapped as of the checkpoint
	Stored        int64  // bytes stored for the distinct mapped chunks, as of StoredAt
	StoredAt      time.Time
	PutLogical    uint64 // plaintext bytes this volume's writers Put (for the stored/logical ratio)
	PutStored     uint64 // bytes those Puts occupied as stored (SizedPutter)
}

type enc struct{ b []byte }

func (e *enc) u8(v uint8)   { e.b = append(e.b, v) }
func (e *enc) u32(v uint32) { e.b = binary.BigEndian.AppendUint32(e.b, v) }
func (e *enc) u64(v uint64) { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *enc) str(s string) { e.u32(uint32(len(s))); e.b = append(e.b, s...) }
func (e *enc) addr(a [32]byte) {
	e.b = append(e.b, a[:]...)
}
func (e *enc) time(t time.Time) {
	if t.IsZero() {
		e.u64(0)
		return
	}
	e.u64(uint64(t.UnixNano()))
}
func (e *enc) bool(v bool) {
	if v {
		e.u8(1)
	} else {
		e.u8(0)
	}
}

// dec reads fields; the first problem sticks in err and later reads return zeros.
type dec struct {
	b   []byte
	err error
}

func (d *dec) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), errMalformed)
	}
}

func (d *dec) take(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.b) < n {
		d.fail("%s: truncated (want %d bytes, have %d)", what, n, len(d.b))
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *dec) u8(what string) uint8 {
	if b := d.take(1, what); b != nil {
		return b[0]
	}
	return 0
}

func (d *dec) u32(what string) uint32 {
	if b := d.take(4, what); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (d *dec) u64(what string) uint64 {
	if b := d.take(8, what); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (d *dec) str(what string, max int) string {
	n := d.u32(what)
	if d.err == nil && int64(n) > int64(max) {
		d.fail("%s: length %d exceeds %d", what, n, max)
		return ""
	}
	return string(d.take(int(n), what))
}

func (d *dec) addr(what string) (a [32]byte) {
	copy(a[:], d.take(32, what))
	return a
}

func (d *dec) bool(what string) bool {
	switch v := d.u8(what); v {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail("%s: flag %d is neither 0 nor 1", what, v)
		return false
	}
}

func (d *dec) time(what string) time.Time {
	v := d.u64(what)
	if v == 0 {
		return time.Time{}
	}
	if v > math.MaxInt64 {
		d.fail("%s: time out of range", what)
		return time.Time{}
	}
	return time.Unix(0, int64(v)).UTC()
}

func (d *dec) end(what string) {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%s: %d trailing bytes", what, len(d.b))
	}
}

// encodeRoot returns the stored form of r (see doc.go).
func encodeRoot(r *rootRecord) []byte {
	e := &enc{b: make([]byte, 0, 512+len(r.Kept)*64)}
	e.b = append(e.b, rootMagic...)
	e.u8(rootVersion)
	e.str(r.Name)
	e.u64(uint64(r.Size))
	p := r.Policy
	e.str(p.Name)
	e.u64(uint64(p.BlockSize))
	e.str(string(p.Compression))
	e.bool(p.Dedup)
	e.u32(uint32(p.Redundancy.Replicas))
	e.u32(uint32(p.Redundancy.Data))
	e.u32(uint32(p.Redundancy.Parity))
	e.str(string(p.Cipher))
	e.u32(uint32(p.Keep))
	e.str(string(p.Spread))
	e.time(r.Created)
	e.str(r.Parent)
	e.bool(r.ReadOnly)
	e.addr(r.MapRoot)
	e.u64(r.Chunks)
	e.u32(uint32(r.PageEntries))
	e.u64(r.CheckpointSeq)
	e.u64(uint64(r.Epoch))
	e.str(r.LeaseOwner)
	e.time(r.LeaseExpiry)
	e.str(string(r.WrappedKey))
	e.u32(uint32(len(r.Kept)))
	for _, k := range r.Kept {
		e.addr(k.MapRoot)
		e.u64(uint64(k.Size))
		e.u64(k.Seq)
		e.time(k.At)
	}
	e.u64(r.Allocated)
	e.u64(uint64(r.Stored))
	e.time(r.StoredAt)
	e.u64(r.PutLogical)
	e.u64(r.PutStored)
	return e.b
}

// decodeRoot parses and checks a stored root. Errors wrap blocks.ErrCorrupt
// and say which field is wrong.
func decodeRoot(b []byte) (*rootRecord, error) {
	if len(b) < len(rootMagic)+1 || string(b[:len(rootMagic)]) != rootMagic {
		return nil, fmt.Errorf("volume: root: not a volume root (bad magic): %w", errMalformed)
	}
	if b[len(rootMagic)] != rootVersion {
		return nil, fmt.Errorf("volume: root: format version %d, this build reads %d: %w", b[len(rootMagic)], rootVersion, errMalformed)
	}
	d := &dec{b: b[len(rootMagic)+1:]}
	r := &rootRecord{}
	r.Name = d.str("name", maxNameLen)
	r.Size = int64(d.u64("size"))
	r.Policy.Name = d.str("policy name", maxStr)
	r.Policy.BlockSize = policies.Size(d.u64("block size"))
	r.Policy.Compression = policies.Compression(d.str("compression", maxStr))
	r.Policy.Dedup = d.bool("dedup")
	r.Policy.Redundancy.Replicas = int(d.u32("replicas"))
	r.Policy.Redundancy.Data = int(d.u32("data pieces"))
	r.Policy.Redundancy.Parity = int(d.u32("parity pieces"))
	r.Policy.Cipher = policies.Cipher(d.str("cipher", maxStr))
	r.Policy.Keep = int(d.u32("keep"))
	r.Policy.Spread = policies.Spread(d.str("spread", maxStr))
	r.Created = d.time("created")
	r.Parent = d.str("parent", maxNameLen)
	r.ReadOnly = d.bool("read-only flag")
	r.MapRoot = d.addr("map root")
	r.Chunks = d.u64("chunks")
	r.PageEntries = int(d.u32("page entries"))
	r.CheckpointSeq = d.u64("checkpoint seq")
	r.Epoch = blocks.Epoch(d.u64("epoch"))
	r.LeaseOwner = d.str("lease owner", maxStr)
	r.LeaseExpiry = d.time("lease expiry")
	r.WrappedKey = []byte(d.str("wrapped key", maxKeyBlob))
	nk := d.u32("kept count")
	if d.err == nil && nk > maxKept {
		d.fail("kept count %d exceeds %d", nk, maxKept)
	}
	for i := 0; d.err == nil && i < int(nk); i++ {
		var k keptVersion
		k.MapRoot = d.addr("kept map root")
		k.Size = int64(d.u64("kept size"))
		k.Seq = d.u64("kept seq")
		k.At = d.time("kept time")
		r.Kept = append(r.Kept, k)
	}
	r.Allocated = d.u64("allocated")
	r.Stored = int64(d.u64("stored"))
	r.StoredAt = d.time("stored at")
	r.PutLogical = d.u64("put logical")
	r.PutStored = d.u64("put stored")
	d.end("root")
	if d.err != nil {
		return nil, fmt.Errorf("volume: root: %w", d.err)
	}
	if err := checkRoot(r); err != nil {
		return nil, fmt.Errorf("volume: root %q: %s: %w", r.Name, err, errMalformed)
	}
	return r, nil
}

// checkRoot checks the invariants of a decoded root.
func checkRoot(r *rootRecord) error {
	bs := int64(r.Policy.BlockSize)
	switch {
	case checkName(r.Name) != nil:
		return fmt.Errorf("bad name")
	case r.Parent != "" && checkName(r.Parent) != nil:
		return fmt.Errorf("bad parent name")
	case bs < int64(policies.MinBlockSize) || bs > int64(policies.MaxBlockSize) || bs&(bs-1) != 0:
		return fmt.Errorf("block size %d is not a power of two in [512B, 4MiB]", bs)
	case r.Size <= 0 || r.Size%SectorSize != 0:
		return fmt.Errorf("size %d is not a positive multiple of %d", r.Size, SectorSize)
	case r.Chunks != uint64((r.Size+bs-1)/bs):
		return fmt.Errorf("chunk count %d does not match size %d", r.Chunks, r.Size)
	case r.PageEntries < 2 || r.PageEntries > chunkmap.MaxPageEntries:
		return fmt.Errorf("page entries %d outside [2, %d]", r.PageEntries, chunkmap.MaxPageEntries)
	case r.Allocated > r.Chunks:
		return fmt.Errorf("allocated %d exceeds chunk count %d", r.Allocated, r.Chunks)
	case r.CheckpointSeq == 0:
		return fmt.Errorf("checkpoint seq 0")
	case r.Stored < 0:
		return fmt.Errorf("negative stored bytes")
	}
	for _, k := range r.Kept {
		if k.Size <= 0 || k.Size%SectorSize != 0 {
			return fmt.Errorf("kept version size %d is not a positive multiple of %d", k.Size, SectorSize)
		}
	}
	return nil
}

// catalogEntry maps a volume name to its ID.
type catalogEntry struct {
	Name string
	ID   blocks.ID
}

// encodeCatalog returns the stored form of the catalogue, sorted by name.
func encodeCatalog(es []catalogEntry) []byte {
	sort.Slice(es, func(i, j int) bool { return es[i].Name < es[j].Name })
	e := &enc{b: make([]byte, 0, 16+len(es)*(32+8+maxNameLen))}
	e.b = append(e.b, catMagic...)
	e.u8(catVersion)
	e.u32(uint32(len(es)))
	for _, x := range es {
		e.str(x.Name)
		e.addr(x.ID)
	}
	return e.b
}

// decodeCatalog parses the catalogue. An empty payload is an empty
// catalogue. Errors wrap blocks.ErrCorrupt.
func decodeCatalog(b []byte) ([]catalogEntry, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if len(b) < len(catMagic)+1 || string(b[:len(catMagic)]) != catMagic {
		return nil, fmt.Errorf("volume: catalogue: bad magic: %w", errMalformed)
	}
	if b[len(catMagic)] != catVersion {
		return nil, fmt.Errorf("volume: catalogue: format version %d, this build reads %d: %w", b[len(catMagic)], catVersion, errMalformed)
	}
	d := &dec{b: b[len(catMagic)+1:]}
	n := d.u32("count")
	if d.err == nil && int64(n)*(4+1+32) > int64(len(d.b)) {
		d.fail("count %d does not fit in %d bytes", n, len(d.b))
	}
	var es []catalogEntry
	seen := map[string]bool{}
	for i := 0; d.err == nil && i < int(n); i++ {
		name := d.str("name", maxNameLen)
		id := d.addr("id")
		if d.err != nil {
			break
		}
		if checkName(name) != nil {
			d.fail("entry %d: bad name %q", i, name)
		}
		if seen[name] {
			d.fail("entry %d: duplicate name %q", i, name)
		}
		seen[name] = true
		es = append(es, catalogEntry{Name: name, ID: id})
	}
	d.end("catalogue")
	if d.err != nil {
		return nil, fmt.Errorf("volume: catalogue: %w", d.err)
	}
	return es, nil
}

// change is one chunk-map change: chunk -> addr (zero addr = hole).
type change struct {
	Chunk uint64
	Addr  blocks.Addr
}

// encodeRecord returns one journal record holding changes (at most
// maxRecEntries of them).
func encodeRecord(cs []change) []byte {
	b := make([]byte, recHeader, recHeader+len(cs)*recEntrySize)
	b[0] = recVersion
	binary.BigEndian.PutUint32(b[1:], uint32(len(cs)))
	for _, c := range cs {
		b = binary.BigEndian.AppendUint64(b, c.Chunk)
		b = append(b, c.Addr[:]...)
	}
	return b
}

// decodeRecord parses a journal record. Errors wrap blocks.ErrCorrupt.
func decodeRecord(b []byte) ([]change, error) {
	if len(b) < recHeader {
		return nil, fmt.Errorf("volume: journal record: %d bytes, shorter than its header: %w", len(b), errMalformed)
	}
	if b[0] != recVersion {
		return nil, fmt.Errorf("volume: journal record: format version %d, this build reads %d: %w", b[0], recVersion, errMalformed)
	}
	n := binary.BigEndian.Uint32(b[1:])
	if int64(len(b)-recHeader) != int64(n)*recEntrySize {
		return nil, fmt.Errorf("volume: journal record: %d entries do not fill %d bytes: %w", n, len(b)-recHeader, errMalformed)
	}
	cs := make([]change, n)
	for i := range cs {
		p := b[recHeader+i*recEntrySize:]
		cs[i].Chunk = binary.BigEndian.Uint64(p)
		copy(cs[i].Addr[:], p[8:40])
	}
	return cs, nil
}

var errBadName = errors.New("bad name")

// checkName enforces the volume-name rules: 1-64 characters of [a-z0-9._-],
// not "." or "..".
func checkName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: volume name is empty; write 1 to %d characters of a-z, 0-9, '.', '_' or '-', e.g. \"db-1\"", errBadName, maxNameLen)
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("%w: volume name %q is %d characters long; write at most %d", errBadName, name, len(name), maxNameLen)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("%w: volume name %q is reserved; use letters or digits, e.g. \"db-1\"", errBadName, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' {
			continue
		}
		if c >= 'A' && c <= 'Z' {
			return fmt.Errorf("%w: volume name %q has the upper-case letter %q; names are lower-case, write %q", errBadName, name, c, toLower(name))
		}
		return fmt.Errorf("%w: volume name %q has the character %q at %d; use only a-z, 0-9, '.', '_' and '-'", errBadName, name, c, i)
	}
	return nil
}

func toLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
