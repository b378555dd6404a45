// This file documents the volume model and every stored format; the
// package comment is in volume.go.
//
// # Model
//
// A volume is a root (a mutable block at the volume's random 32-byte ID,
// changed only by compare-and-set through Options.Mutable), a chunk map
// (package chunkmap: a tree of immutable pages in the volume's block
// store) and a journal (an intent log on Options.Journals' holders).
// Chunk i holds bytes [i*B, (i+1)*B) for the policy block size B; the map
// gives its block address, or the zero address for a hole (reads zeros).
//
// Writes go to an in-memory write-back cache of dirty chunks (bounded by
// Options.DirtyLimit; partial chunks are read-modified-written; writers of
// one chunk are serialised by lock striping, never the whole volume; reads
// see dirty data). A push Puts the dirty chunks (in parallel, bounded by
// Options.PutParallel), sets them in the map and queues one journal change
// chunk -> addr each. Flush pushes, appends the queued changes as batched
// records (one record per up to 26,214 changes) to every journal holder,
// then Syncs the store and every holder in parallel, each distinct holder
// once (a store that names its holders through blocks.SyncHolders is synced
// through them; on one node the store's holder and the journal's are the
// same silo, so a Flush costs one Sync): it returns only when all of it is
// durable. Concurrent Flushes share the work (a Flush whose changes an
// earlier one covered returns at once). Raft is not on this path.
//
// Reads take dirty data first, else the map's block, read through a pooled
// buffer when the store implements blocks.GetterInto. A read of up to 128
// KiB runs inline; a larger one reads groups of chunks of that size in
// parallel (bounded by Options.PutParallel).
//
// A checkpoint (every Options.CheckpointEvery, after
// Options.CheckpointRecords records, when the map's dirty pages pass half of
// Options.CacheBytes, on Resize, Snapshot and Close) flushes, writes the
// dirty map pages, syncs the store, and compare-and-sets the root with the
// new map root and checkpoint seq; then it trims the journal below it. A
// volume makes proposals only there and at lease renewal (every
// LeaseTTL/3).
//
// # Leases and fencing
//
// Opening read-write compare-and-sets the root's lease to {Owner, now +
// LeaseTTL} and its epoch to epoch+1, refusing with ErrAttached while another
// owner's lease is unexpired (the same owner may take its own lease over:
// a restarted process). It then seals the journal at the new epoch on every
// holder, so the previous writer's appends fail with blocks.ErrFenced, and
// replays the union of the holders' records from the checkpoint seq (the
// higher epoch wins a seq; a change whose block is missing was an unflushed
// write lost in a crash, and is skipped and logged). A writer that meets a
// newer epoch (renewal, checkpoint) or a fenced append is fenced: every
// later call returns ErrFenced, and its unflushed writes are lost, as they
// may be. Read-only opens (and snapshots, always read-only) take no lease
// and seal nothing: they replay the journal into a private copy of the map.
//
// # Root format (mutable block at the volume ID, version 1)
//
// Integers are big-endian; str is a u32 length then bytes; time is u64
// Unix nanoseconds, 0 for none; addr is 32 bytes.
//
//	"CRNV" u8 version=1
//	str name                      1-64 of [a-z0-9._-]
//	u64 size                      bytes, a positive multiple of 512
//	policy: str name, u64 block size, str compression, u8 dedup (0/1),
//	        u32 replicas, u32 data, u32 parity, str cipher, u32 keep, str spread
//	time created
//	str parent                    "" or the snapshot/clone source's name
//	u8 read-only                  1 for a snapshot
//	addr map root                 zero: an all-hole map
//	u64 chunks                    ceil(size / block size)
//	u32 page entries              chunk map entries per page, fixed at creation
//	u64 checkpoint seq            journal records below it are covered by the map root
//	u64 epoch                     the current attach epoch
//	str lease owner, time lease expiry   "" and 0 when not attached
//	str wrapped key               nonce(12) || AES-256-GCM(SHA-256("cairn/volume-kek\0"||MasterKey),
//	                              the volume's random 32-byte key, additional data = volume ID)
//	u32 kept count, then per kept version (policy keep; the last N map roots
//	        replaced by checkpoints): addr map root, u64 size, u64 seq, time at
//	u64 allocated                 mapped chunks at the checkpoint (Info.Written / block size)
//	u64 stored, time stored at    Info.Stored as measured by the last CollectGarbage
//	u64 put logical, u64 put stored   plaintext and stored bytes of this volume's Puts
//
// Decoding rejects a bad magic or version, truncation, trailing bytes,
// over-long strings, flags other than 0/1, and inconsistent fields (chunk
// count vs size, block size, page entries), with an error that names the
// field and wraps blocks.ErrCorrupt.
//
// # Catalogue format (mutable block blocks.NameID("cairn/catalog"), version 1)
//
//	"CRNC" u8 version=1 u32 count, then count × (str name, 32-byte volume ID)
//
// sorted by name, names unique. An absent block is an empty catalogue.
// Create writes the root first, then adds the entry (dropping the root if
// the name is taken); Delete removes the entry, then the root, then the
// journal (Trim(MaxUint64)); the blocks go at the next CollectGarbage.
//
// # Journal record format (version 1)
//
//	u8 version=1 u32 n, then n × (u64 chunk, 32-byte addr)   zero addr: a hole
//
// Records are numbered from 1 across epochs; the epoch travels beside the
// record in the blocks.Journal.
//
// # Space accounting
//
// Info.Written is allocated chunks × block size, counted exactly as chunks
// turn from holes into data and back. Info.Stored is measured by
// CollectGarbage: the distinct chunk addresses of the live map (so dedup
// counts once) × block size × the ratio of stored to plaintext bytes of the
// volume's Puts (blocks.SizedPutter when the store has it, else 1), kept
// in the root. Before the first collection it is Written × that ratio.
//
// # Garbage collection
//
// CollectGarbage marks from every root in the catalogue (live maps,
// snapshots, kept versions), the journal records past each checkpoint,
// and the in-memory state of volumes open read-write in this process; it
// records every address Put during the collection, and deletes (through
// Options.Blocks) what Options' walk lists and neither marks nor records.
// Puts and the sweep's deletes exclude each other, so a block that a writer
// here Puts again during the sweep is never lost. Writers attached on
// other nodes are seen only through their journals and checkpoints.

package volume
