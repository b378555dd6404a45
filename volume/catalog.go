package volume

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cairn/blocks"
	"cairn/policies"
	"cairn/volume/chunkmap"
)

var _ Catalog = (*Catalogue)(nil)

// JournalHolder is a holder of a volume's journal: a blocks.Journal that
// can also make its appended records durable. In production on one node it
// is the silo, which also holds the data, so one Sync covers both.
type JournalHolder interface {
	blocks.Journal
	Sync(ctx context.Context) error
}

// Options configure a catalogue and the volumes it opens.
type Options struct {
	// Mutable holds the catalogue, the volume roots and the leases (raft in
	// production). Required.
	Mutable blocks.MutableStore
	// StoreFor returns the block pipeline of a policy keyed with a volume's
	// 32-byte key. Snapshots and clones share their source's key, so their
	// blocks dedup with it. Required.
	StoreFor func(p policies.Policy, key []byte) (blocks.Store, error)
	// Journals returns the holders of a volume's journal; appends go to all
	// of them and a Flush syncs all of them. Required.
	Journals func(volumeID blocks.ID, p policies.Policy) ([]JournalHolder, error)
	// Blocks is the store CollectGarbage deletes unreferenced blocks
	// through: its Delete must remove a block whatever policy stored it
	// (the redundancy layer over all holders). Only CollectGarbage needs it.
	Blocks blocks.Store
	// MasterKey wraps each volume's random 32-byte key (AES-256-GCM under
	// SHA-256 of MasterKey). Required, non-empty.
	MasterKey []byte
	// Owner names this node in leases. Required.
	Owner string
	// LeaseTTL is the attach lease's lifetime; default 15s. The lease is
	// renewed every LeaseTTL/3.
	LeaseTTL time.Duration
	// CheckpointEvery is the period of background checkpoints; default 30s.
	CheckpointEvery time.Duration
	// CheckpointRecords triggers a checkpoint once that many journal
	// records were appended since the last one; default 4096.
	CheckpointRecords int
	// DirtyLimit bounds the bytes of written-but-not-pushed chunk data held
	// in memory by all the catalogue's open volumes together (the write-back
	// cache); default DefaultDirtyLimit(). A writer past it pushes its own
	// volume's dirty chunks; past three quarters of it, the background does.
	DirtyLimit int64
	// CacheBytes and PageEntries configure each volume's chunk map
	// (chunkmap.Options); zero means the chunkmap defaults.
	CacheBytes  int64
	PageEntries int
	// PutParallel bounds concurrent Puts while pushing dirty chunks; default 16.
	PutParallel int
	// Now is the clock of leases; default time.Now.
	Now func() time.Time
	// Logger receives diagnostics; default slog.Default().
	Logger *slog.Logger
}

// Catalogue is the volume catalogue: it implements Catalog over
// Options.Mutable and opens Volumes. Safe for concurrent use.
type Catalogue struct {
	opts Options
	log  *slog.Logger
	kek  cipher.AEAD

	mu     sync.Mutex                // guards open and closed
	open   map[blocks.ID]*volumeImpl // read-write volumes open in this process
	closed bool

	dirty atomic.Int64 // dirty bytes of all open volumes (see Options.DirtyLimit)
	lost  atomic.Int64 // see LostUnflushed

	gc gcTracker
}

// NewCatalog checks opts and returns the catalogue. It does no I/O.
func NewCatalog(ctx context.Context, opts Options) (*Catalogue, error) {
	switch {
	case opts.Mutable == nil:
		return nil, fmt.Errorf("volume: Options.Mutable is required: %w", ErrInvalid)
	case opts.StoreFor == nil:
		return nil, fmt.Errorf("volume: Options.StoreFor is required: %w", ErrInvalid)
	case opts.Journals == nil:
		return nil, fmt.Errorf("volume: Options.Journals is required: %w", ErrInvalid)
	case len(opts.MasterKey) == 0:
		return nil, fmt.Errorf("volume: Options.MasterKey is required (it wraps every volume's key): %w", ErrInvalid)
	case opts.Owner == "":
		return nil, fmt.Errorf("volume: Options.Owner is required (it names this node in leases): %w", ErrInvalid)
	}
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = 15 * time.Second
	}
	if opts.CheckpointEvery <= 0 {
		opts.CheckpointEvery = 30 * time.Second
	}
	if opts.CheckpointRecords <= 0 {
		opts.CheckpointRecords = 4096
	}
	if opts.DirtyLimit <= 0 {
		opts.DirtyLimit = DefaultDirtyLimit()
	}
	if opts.PutParallel <= 0 {
		opts.PutParallel = 16
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	k := sha256.Sum256(append([]byte("cairn/volume-kek\x00"), opts.MasterKey...))
	blk, err := aes.NewCipher(k[:])
	if err != nil {
		return nil, fmt.Errorf("volume: master key: %w", err)
	}
	aead, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, fmt.Errorf("volume: master key: %w", err)
	}
	return &Catalogue{
		opts: opts,
		log:  opts.Logger.With("component", "volume"),
		kek:  aead,
		open: map[blocks.ID]*volumeImpl{},
	}, nil
}

// wrapKey seals a volume key for the volume id.
func (c *Catalogue) wrapKey(id blocks.ID, key []byte) []byte {
	nonce := make([]byte, c.kek.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic("volume: crypto/rand failed: " + err.Error()) // crypto/rand never fails on supported platforms
	}
	return c.kek.Seal(nonce, nonce, key, id[:])
}

// unwrapKey opens a wrapped volume key.
func (c *Catalogue) unwrapKey(id blocks.ID, wrapped []byte) ([]byte, error) {
	ns := c.kek.NonceSize()
	if len(wrapped) < ns {
		return nil, fmt.Errorf("volume: wrapped key too short: %w", blocks.ErrCorrupt)
	}
	key, err := c.kek.Open(nil, wrapped[:ns], wrapped[ns:], id[:])
	if err != nil {
		return nil, fmt.Errorf("volume: cannot unwrap the volume key (wrong master key?): %w", blocks.ErrCorrupt)
	}
	return key, nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("volume: crypto/rand failed: " + err.Error())
	}
	return b
}

// loadCatalog returns the catalogue entries and the catalogue version.
func (c *Catalogue) loadCatalog(ctx context.Context) ([]catalogEntry, blocks.Version, error) {
	ver, b, err := c.opts.Mutable.Load(ctx, catalogID)
	if err != nil {
		return nil, 0, fmt.Errorf("volume: load catalogue: %w", err)
	}
	es, err := decodeCatalog(b)
	return es, ver, err
}

// updateCatalog applies fn to the catalogue with compare-and-set, retrying
// on conflict.
func (c *Catalogue) updateCatalog(ctx context.Context, fn func([]catalogEntry) ([]catalogEntry, error)) error {
	for {
		es, ver, err := c.loadCatalog(ctx)
		if err != nil {
			return err
		}
		es, err = fn(es)
		if err != nil {
			return err
		}
		_, err = c.opts.Mutable.CompareAndSet(ctx, catalogID, ver, encodeCatalog(es))
		if errors.Is(err, blocks.ErrConflict) {
			continue
		}
		if err != nil {
			return fmt.Errorf("volume: update catalogue: %w", err)
		}
		return nil
	}
}

// lookup returns the ID of the named volume.
func (c *Catalogue) lookup(ctx context.Context, name string) (blocks.ID, error) {
	if err := checkName(name); err != nil {
		return blocks.ID{}, fmt.Errorf("volume: %w: %w", ErrInvalid, err)
	}
	es, _, err := c.loadCatalog(ctx)
	if err != nil {
		return blocks.ID{}, err
	}
	for _, e := range es {
		if e.Name == name {
			return e.ID, nil
		}
	}
	return blocks.ID{}, fmt.Errorf("volume %q: %w", name, ErrNotFound)
}

// loadRoot returns a volume's root and its version.
func (c *Catalogue) loadRoot(ctx context.Context, id blocks.ID) (*rootRecord, blocks.Version, error) {
	ver, b, err := c.opts.Mutable.Load(ctx, id)
	if err != nil {
		return nil, 0, fmt.Errorf("volume: load root %s: %w", id, err)
	}
	if ver == 0 {
		return nil, 0, fmt.Errorf("volume: root %s: %w", id, ErrNotFound)
	}
	r, err := decodeRoot(b)
	if err != nil {
		return nil, 0, err
	}
	return r, ver, nil
}

// updateRoot applies fn to a volume root with compare-and-set, retrying on
// conflict. fn may be called several times.
func (c *Catalogue) updateRoot(ctx context.Context, id blocks.ID, fn func(r *rootRecord) error) (*rootRecord, error) {
	for {
		r, ver, err := c.loadRoot(ctx, id)
		if err != nil {
			return nil, err
		}
		if err := fn(r); err != nil {
			return nil, err
		}
		_, err = c.opts.Mutable.CompareAndSet(ctx, id, ver, encodeRoot(r))
		if errors.Is(err, blocks.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("volume: update root %s: %w", id, err)
		}
		return r, nil
	}
}

// leaseHeld reports whether r carries an unexpired lease.
func (c *Catalogue) leaseHeld(r *rootRecord) bool {
	return r.LeaseOwner != "" && c.opts.Now().Before(r.LeaseExpiry)
}

func (c *Catalogue) attachedErr(name string, r *rootRecord) error {
	return fmt.Errorf("volume %q: %w: %q holds the lease until %s (epoch %d); detach it there, or wait for the lease to expire",
		name, ErrAttached, r.LeaseOwner, r.LeaseExpiry.Format(time.RFC3339), r.Epoch)
}

// volumeStore returns the store of a volume root, tracked for GC.
func (c *Catalogue) volumeStore(id blocks.ID, r *rootRecord) (blocks.Store, error) {
	key, err := c.unwrapKey(id, r.WrappedKey)
	if err != nil {
		return nil, err
	}
	s, err := c.opts.StoreFor(r.Policy, key)
	if err != nil {
		return nil, fmt.Errorf("volume %q: block store: %w", r.Name, err)
	}
	return &trackedStore{Store: s, gc: &c.gc}, nil
}

// mapOptions returns the chunk map options of a root: the page size is
// the one the map was created with, whatever Options.PageEntries says now.
func (c *Catalogue) mapOptions(r *rootRecord) chunkmap.Options {
	return chunkmap.Options{CacheBytes: c.opts.CacheBytes, PageEntries: r.PageEntries, Logger: c.log}
}

// pageEntries is the page size of new volumes' maps.
func (c *Catalogue) pageEntries() int {
	e := c.opts.PageEntries
	if e <= 0 {
		e = chunkmap.DefaultPageEntries
	}
	return min(max(e, 2), chunkmap.MaxPageEntries)
}

func chunksFor(size int64, bs int64) uint64 { return uint64((size + bs - 1) / bs) }

// checkSize validates a volume size for a block size.
func checkSize(size int64) error {
	if size <= 0 {
		return fmt.Errorf("volume: %w: size %d is not positive; give a size such as 10GiB", ErrInvalid, size)
	}
	if size%SectorSize != 0 {
		return fmt.Errorf("volume: %w: size %d is not a multiple of %d bytes; round it to %d", ErrInvalid, size, SectorSize, (size+SectorSize-1)/SectorSize*SectorSize)
	}
	if size > math.MaxInt64/2 {
		return fmt.Errorf("volume: %w: size %d is too large", ErrInvalid, size)
	}
	return nil
}

func checkPolicy(p policies.Policy) error {
	bs := int64(p.BlockSize)
	if bs < int64(policies.MinBlockSize) || bs > int64(policies.MaxBlockSize) || bs&(bs-1) != 0 {
		return fmt.Errorf("volume: %w: policy block size %s is not a power of two between 512B and 4MiB; write e.g. block_size = \"4KiB\"", ErrInvalid, p.BlockSize)
	}
	if p.Keep < 0 || p.Keep > maxKept {
		return fmt.Errorf("volume: %w: policy keep = %d; write a number between 0 and %d", ErrInvalid, p.Keep, maxKept)
	}
	return nil
}

// Create makes a new, empty volume. Errors: ErrInvalid (bad name, size or
// policy; the message says what to write), ErrExists.
func (c *Catalogue) Create(ctx context.Context, name string, size int64, p policies.Policy) (Info, error) {
	if err := checkName(name); err != nil {
		return Info{}, fmt.Errorf("volume: %w: %w", ErrInvalid, err)
	}
	if err := checkSize(size); err != nil {
		return Info{}, err
	}
	if err := checkPolicy(p); err != nil {
		return Info{}, err
	}
	id := blocks.ID(randomBytes(32))
	r := &rootRecord{
		Name:          name,
		Size:          size,
		Policy:        p,
		Created:       c.opts.Now().UTC(),
		Chunks:        chunksFor(size, int64(p.BlockSize)),
		PageEntries:   c.pageEntries(),
		CheckpointSeq: 1,
		WrappedKey:    c.wrapKey(id, randomBytes(32)),
	}
	return c.createRoot(ctx, id, r)
}

// createRoot writes a new root at id, then adds it to the catalogue under
// r.Name (dropping the root again if the name is taken).
func (c *Catalogue) createRoot(ctx context.Context, id blocks.ID, r *rootRecord) (Info, error) {
	if _, err := c.opts.Mutable.CompareAndSet(ctx, id, 0, encodeRoot(r)); err != nil {
		return Info{}, fmt.Errorf("volume %q: write root: %w", r.Name, err)
	}
	err := c.updateCatalog(ctx, func(es []catalogEntry) ([]catalogEntry, error) {
		for _, e := range es {
			if e.Name == r.Name {
				return nil, fmt.Errorf("volume %q: %w; pick another name or delete it first", r.Name, ErrExists)
			}
		}
		return append(es, catalogEntry{Name: r.Name, ID: id}), nil
	})
	if err != nil {
		if _, derr := c.opts.Mutable.CompareAndSet(ctx, id, 1, nil); derr != nil {
			c.log.Warn("dropping the root of a volume that was not created", "volume", r.Name, "err", derr)
		}
		return Info{}, err
	}
	return c.info(r, nil), nil
}

// info builds an Info from a root, and from the live volume when open here.
func (c *Catalogue) info(r *rootRecord, v *volumeImpl) Info {
	in := Info{
		Name:     r.Name,
		Size:     r.Size,
		Policy:   r.Policy,
		ReadOnly: r.ReadOnly,
		Parent:   r.Parent,
		Created:  r.Created,
		Epoch:    uint64(r.Epoch),
		Attached: c.leaseHeld(r),
		Written:  int64(r.Allocated) * int64(r.Policy.BlockSize),
	}
	putL, putS := r.PutLogical, r.PutStored
	if v != nil {
		alloc, pl, ps := v.stats()
		in.Written = alloc * int64(r.Policy.BlockSize)
		putL, putS = pl, ps
	}
	in.Stored = in.Written
	if putL > 0 {
		in.Stored = int64(float64(in.Written) * float64(putS) / float64(putL))
	}
	if !r.StoredAt.IsZero() {
		in.Stored = r.Stored // measured by the last CollectGarbage
	}
	return in
}

// Open attaches a volume. Read-write (the default) takes the attach lease
// (ErrAttached while another owner's lease is unexpired, or while it is
// already open read-write in this process), seals the journal against older
// epochs and replays it. Snapshots always open read-only. Errors:
// ErrNotFound, ErrAttached, ErrInvalid, block-layer errors.
func (c *Catalogue) Open(ctx context.Context, name string, opts OpenOptions) (Volume, error) {
	v, err := c.openVolume(ctx, name, opts.ReadOnly)
	if err != nil {
		return nil, err
	}
	return v, nil
}

func (c *Catalogue) openVolume(ctx context.Context, name string, readOnly bool) (*volumeImpl, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("volume: catalogue: %w", ErrClosed)
	}
	id, err := c.lookup(ctx, name)
	if err != nil {
		return nil, err
	}
	r, _, err := c.loadRoot(ctx, id)
	if err != nil {
		return nil, err
	}
	if readOnly || r.ReadOnly {
		return c.openReadOnly(ctx, id, r)
	}
	c.mu.Lock()
	if _, busy := c.open[id]; busy { // open, or being opened (reserved as nil)
		c.mu.Unlock()
		return nil, fmt.Errorf("volume %q: %w: it is already open read-write in this process", name, ErrAttached)
	}
	c.open[id] = nil // reserve
	c.mu.Unlock()
	v, err := c.openWritable(ctx, id)
	c.mu.Lock()
	if err != nil {
		delete(c.open, id)
	} else {
		c.open[id] = v
	}
	c.mu.Unlock()
	return v, err
}

// reserved reports whether id is open (or being opened) read-write here.
func (c *Catalogue) isOpen(id blocks.ID) (*volumeImpl, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.open[id]
	return v, ok
}

// awaitForget waits until v, which is closing, is no longer the open
// volume of id (Close forgets it last), polling, for at most a minute.
func (c *Catalogue) awaitForget(ctx context.Context, id blocks.ID, v *volumeImpl) error {
	deadline := time.Now().Add(time.Minute)
	for {
		if cur, ok := c.isOpen(id); !ok || cur != v {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("volume %q: still closing after a minute: %w", v.name, ErrClosed)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("volume %q: wait for close: %w", v.name, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (c *Catalogue) forget(id blocks.ID, v *volumeImpl) {
	v.mu.Lock()
	v.addDirty(-v.dirtyBytes) // what a failed final push left behind
	v.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open[id] == v {
		delete(c.open, id)
	}
}

// kickAll asks every open volume's background to push (the catalogue's
// dirty bytes are past the limit: the writer that noticed can only push
// its own).
func (c *Catalogue) kickAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, v := range c.open {
		v.kickBackground()
	}
}

// DefaultDirtyLimit is the write-back cache's default size: 1/16 of the
// memory this process may use (the machine's, or its cgroup's limit when
// lower: a container's), at least 64 MiB and at most 2 GiB (256 MiB where
// the memory size cannot be read). Like the kernel's page cache for a
// plain file, the cache absorbs overwrites of a working set that fits in
// it, and a FLUSH (or the 30 s checkpoint) pushes what it holds; the
// kernel lets dirty pages reach 10% of memory before it writes them back
// and 20% before writers wait, so 1/16 is the more careful share. The Go
// heap holding the cache runs to about twice its size under load (see
// cmd/cairn's memory limit), hence the cap. Up to 512 MiB (the cap until
// 2026-11) a 1 GiB working set did not fit on a 24 GiB machine, and
// sustained writes over it ran at the log's disk speed, about a tenth of a
// page-cache overwrite's.
func DefaultDirtyLimit() int64 {
	return dirtyLimitFor(usableMemory())
}

// dirtyLimitFor is DefaultDirtyLimit for mem bytes of memory (0: unknown).
func dirtyLimitFor(mem int64) int64 {
	if mem <= 0 {
		return 256 << 20
	}
	return min(max(mem/16, 64<<20), 2<<30)
}

// usableMemory returns the memory this process may use: the machine's
// (MemTotal of /proc/meminfo), or the cgroup v2 limit of its group when
// that is lower; 0 if neither can be read.
func usableMemory() int64 {
	mem := memTotal()
	if lim := cgroupLimit(); lim > 0 && (mem <= 0 || lim < mem) {
		mem = lim
	}
	return mem
}

// memTotal returns the machine's memory in bytes (MemTotal of
// /proc/meminfo), or 0.
func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// cgroupLimit returns the memory limit of this process's cgroup, or 0
// when there is none or it cannot be read: cgroup v2's memory.max of the
// group /proc/self/cgroup names, else cgroup v1's memory.limit_in_bytes.
func cgroupLimit() int64 {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0
	}
	if group, ok := cgroupPath(string(b), ""); ok {
		if m, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", group, "memory.max")); err == nil {
			return parseMemoryMax(string(m))
		}
	}
	if group, ok := cgroupPath(string(b), "memory"); ok {
		if m, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", group, "memory.limit_in_bytes")); err == nil {
			return parseMemoryMax(string(m))
		}
	}
	return 0
}

// cgroupPath returns the group path of a /proc/self/cgroup text for the
// controller ctrl: "" for the cgroup v2 line ("0::/path"), a v1
// controller's name ("memory") for its line ("4:memory:/path").
func cgroupPath(text, ctrl string) (string, bool) {
	for _, line := range strings.Split(text, "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 || !strings.HasPrefix(f[2], "/") {
			continue
		}
		if ctrl == "" && f[0] == "0" && f[1] == "" || ctrl != "" && slices.Contains(strings.Split(f[1], ","), ctrl) {
			return filepath.Clean(f[2]), true
		}
	}
	return "", false
}

// parseMemoryMax reads a cgroup memory limit: a byte count, or "max"
// (v2) or a near-2^63 count (v1) for none (0).
func parseMemoryMax(text string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(text), 10, 64)
	if err != nil || n <= 0 || n >= 1<<60 {
		return 0
	}
	return n
}

// List returns every volume (snapshots included), sorted by name.
func (c *Catalogue) List(ctx context.Context) ([]Info, error) {
	es, _, err := c.loadCatalog(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Info, 0, len(es))
	for _, e := range es {
		r, _, err := c.loadRoot(ctx, e.ID)
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		v, _ := c.isOpen(e.ID)
		out = append(out, c.info(r, v))
	}
	return out, nil
}

// Inspect describes one volume. Errors: ErrNotFound, ErrInvalid.
func (c *Catalogue) Inspect(ctx context.Context, name string) (Info, error) {
	id, err := c.lookup(ctx, name)
	if err != nil {
		return Info{}, err
	}
	r, _, err := c.loadRoot(ctx, id)
	if err != nil {
		return Info{}, err
	}
	v, _ := c.isOpen(id)
	return c.info(r, v), nil
}

// Resize grows or shrinks a volume. Growing keeps the data; shrinking drops
// everything past the new end (a later grow reads zeros there). A volume
// open read-write in this process is resized in place; one attached by
// another owner is refused with ErrAttached; otherwise the volume is
// attached briefly (journal replayed), resized and checkpointed.
func (c *Catalogue) Resize(ctx context.Context, name string, size int64) error {
	if err := checkSize(size); err != nil {
		return err
	}
	id, err := c.lookup(ctx, name)
	if err != nil {
		return err
	}
	if v, ok := c.isOpen(id); ok && v != nil {
		return v.resize(ctx, size)
	}
	r, _, err := c.loadRoot(ctx, id)
	if err != nil {
		return err
	}
	if r.ReadOnly {
		return fmt.Errorf("volume %q: %w: a snapshot cannot be resized; clone it first", name, ErrReadOnly)
	}
	v, err := c.openVolume(ctx, name, false)
	if err != nil {
		return err
	}
	err = v.resize(ctx, size)
	if cerr := v.Close(ctx); err == nil {
		err = cerr
	}
	return err
}

// Snapshot makes a read-only volume named snapshot holding the current
// data of name: everything flushed (and, for a volume open here, written)
// before the call. It costs one map checkpoint and two roots: the blocks
// are shared.
func (c *Catalogue) Snapshot(ctx context.Context, name, snapshot string) error {
	if err := checkName(snapshot); err != nil {
		return fmt.Errorf("volume: %w: %w", ErrInvalid, err)
	}
	id, err := c.lookup(ctx, name)
	if err != nil {
		return err
	}
	var mapRoot blocks.Addr
	var r *rootRecord
	v, ok := c.isOpen(id)
	if ok && v != nil {
		err := v.checkpoint(ctx)
		if errors.Is(err, ErrClosed) {
			// Closed meanwhile (its last user let go): Close checkpoints
			// and releases the lease, then forgets it. Wait for that, and
			// snapshot it as a volume open nowhere.
			if err := c.awaitForget(ctx, id, v); err != nil {
				return err
			}
			return c.Snapshot(ctx, name, snapshot)
		}
		if err != nil {
			return err
		}
		if r, _, err = c.loadRoot(ctx, id); err != nil {
			return err
		}
		mapRoot = r.MapRoot
	} else {
		// Not open here: replay the journal past the checkpoint into a
		// private copy of the map, so the snapshot holds every flushed write.
		if r, _, err = c.loadRoot(ctx, id); err != nil {
			return err
		}
		ro, err := c.openReadOnly(ctx, id, r)
		if err != nil {
			return err
		}
		mapRoot, err = ro.m.Flush(ctx)
		if err == nil {
			err = ro.store.Sync(ctx)
		}
		if err != nil {
			return fmt.Errorf("volume %q: snapshot: %w", name, err)
		}
		r.Allocated = uint64(ro.allocated)
	}
	return c.derive(ctx, id, r, mapRoot, snapshot, true)
}

// derive creates a new volume named newName sharing r's key and blocks,
// with map root mapRoot.
func (c *Catalogue) derive(ctx context.Context, srcID blocks.ID, r *rootRecord, mapRoot blocks.Addr, newName string, readOnly bool) error {
	key, err := c.unwrapKey(srcID, r.WrappedKey)
	if err != nil {
		return err
	}
	id := blocks.ID(randomBytes(32))
	nr := &rootRecord{
		Name:          newName,
		Size:          r.Size,
		Policy:        r.Policy,
		Created:       c.opts.Now().UTC(),
		Parent:        r.Name,
		ReadOnly:      readOnly,
		MapRoot:       mapRoot,
		Chunks:        r.Chunks,
		PageEntries:   r.PageEntries,
		CheckpointSeq: 1,
		WrappedKey:    c.wrapKey(id, key),
		Allocated:     r.Allocated,
		PutLogical:    r.PutLogical,
		PutStored:     r.PutStored,
	}
	_, err = c.createRoot(ctx, id, nr)
	return err
}

// Clone makes a writable volume named name from the snapshot snapshot
// (O(1): the blocks are shared). Cloning a writable volume is refused
// with ErrInvalid: snapshot it first.
func (c *Catalogue) Clone(ctx context.Context, snapshot, name string) error {
	if err := checkName(name); err != nil {
		return fmt.Errorf("volume: %w: %w", ErrInvalid, err)
	}
	id, err := c.lookup(ctx, snapshot)
	if err != nil {
		return err
	}
	r, _, err := c.loadRoot(ctx, id)
	if err != nil {
		return err
	}
	if !r.ReadOnly {
		return fmt.Errorf("volume %q: %w: clone takes a snapshot, and this volume is writable; take a snapshot of it first", snapshot, ErrInvalid)
	}
	return c.derive(ctx, id, r, r.MapRoot, name, false)
}

// Delete removes a volume: its catalogue entry, its root and its journal.
// Its blocks are freed by the next CollectGarbage (snapshots keep theirs).
// Refused with ErrAttached while another owner holds the lease or while it
// is open read-write in this process.
func (c *Catalogue) Delete(ctx context.Context, name string) error {
	id, err := c.lookup(ctx, name)
	if err != nil {
		return err
	}
	if _, ok := c.isOpen(id); ok {
		return fmt.Errorf("volume %q: %w: it is open read-write in this process; close it first", name, ErrAttached)
	}
	r, ver, err := c.loadRoot(ctx, id)
	if err != nil {
		return err
	}
	if c.leaseHeld(r) && r.LeaseOwner != c.opts.Owner {
		return c.attachedErr(name, r)
	}
	err = c.updateCatalog(ctx, func(es []catalogEntry) ([]catalogEntry, error) {
		out := es[:0]
		for _, e := range es {
			if e.Name != name {
				out = append(out, e)
			}
		}
		return out, nil
	})
	if err != nil {
		return err
	}
	if _, err := c.opts.Mutable.CompareAndSet(ctx, id, ver, nil); err != nil {
		c.log.Warn("volume deleted from the catalogue, but its root stays", "volume", name, "err", err)
	}
	js, err := c.opts.Journals(id, r.Policy)
	if err != nil {
		c.log.Warn("volume deleted, but its journal holders are unknown", "volume", name, "err", err)
		return nil
	}
	for _, j := range js {
		if err := j.Trim(ctx, id, math.MaxUint64); err != nil {
			c.log.Warn("volume deleted, but a journal holder kept its log", "volume", name, "err", err)
		}
	}
	return nil
}

// Close closes every volume opened read-write through c (flush,
// checkpoint, lease release). Later Opens return ErrClosed.
func (c *Catalogue) Close(ctx context.Context) error {
	c.mu.Lock()
	c.closed = true
	var vs []*volumeImpl
	for _, v := range c.open {
		if v != nil {
			vs = append(vs, v)
		}
	}
	c.mu.Unlock()
	var errs []error
	for _, v := range vs {
		if err := v.Close(ctx); err != nil && !errors.Is(err, ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// LostUnflushed returns the bytes of writes never flushed that volumes of
// this catalogue gave up when they closed, because the store refused them
// (a full disk, holders down): the client that wrote them had no FLUSH
// succeed for them, but a node that stops should not claim it stored
// everything.
func (c *Catalogue) LostUnflushed() int64 { return c.lost.Load() }
