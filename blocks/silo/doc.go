// Package silo is a node's local block storage: a [blocks.Holder],
// [blocks.Walker] and [blocks.Journal] kept in append-only segment files in
// one directory, built for millions of small pieces (4 KiB up to
// blocks.MaxPiece) and for crashes.
//
// # Model
//
// Every change (a piece, a tombstone, a journal record, a seal, a trim) is
// one record appended to the active segment, and an in-memory index maps
// each key to its record (segment, offset, length). Writes are write-back:
// PutPiece and Append return once the record is in the silo's write buffer
// (up to 256 KiB, written to the file with one pwrite when full, at Sync
// and at sealing; reads of buffered records are served from it). Sync is
// group commit: it writes the buffer out and one fdatasync of the active
// segment makes everything written before it durable, pieces and journal
// records alike. Sync callers share fdatasyncs by write generation: a
// caller whose writes a completed sync covered returns at once, one whose
// writes the sync in flight covers waits for it, the others queue for the
// next, which serves everyone queued.
//
// Segments are preallocated: each is created at Options.SegmentSize bytes
// of written zeros and synced, a spare one ahead of need by a background
// goroutine, so appends overwrite allocated blocks and an fdatasync writes
// data, not the file's size or extents. When the active segment reaches
// Options.SegmentSize it is sealed: its zero tail is truncated and it is
// fdatasynced, and the spare becomes active (made on the spot if not
// ready), so every segment but the last is durable whole (writers wait for
// that fdatasync, once per segment; with regular Syncs little is left to
// flush). Seal syncs before it returns.
//
// Every read is checked: GetPiece and Replay verify the record's CRC32C
// and return blocks.ErrCorrupt rather than bytes that fail it.
//
// Deleting a piece writes a tombstone; trimming a log writes a trim record.
// The bytes they kill stay in their segments until compaction: when the dead
// share of a sealed segment reaches Options.CompactRatio (or on Compact),
// its live records are copied verbatim to the active segment, synced, and
// the old file removed and the directory synced. A tombstone is copied
// while a segment older than it may still hold a put of its key; a log's
// drop record while any older segment exists; a log's latest seal and trim
// while the log exists.
//
// # Stamps
//
// Each record carries a stamp: a silo-wide counter, one per write, kept
// unchanged when compaction copies the record. Opening resolves every
// conflict by stamp (the higher wins: a tombstone over an older put, a trim
// or drop over older journal records; for journal records the higher epoch
// first, then the stamp), so the result does not depend on where
// compaction moved records, or on a crash leaving both copies behind.
//
// # Opening
//
// Open lists the segment files. Trailing segments whose first 80 bytes are
// zero hold no record any Sync covered (a spare, or an active segment none
// of whose records reached the disk): they are removed (intact records
// found in one are logged at error level), except that one of exactly
// Options.SegmentSize zero bytes right after the active segment is kept as
// the spare. The rest are scanned in order. Sealed segments are
// scanned by their headers only: the header has its own checksum, so the
// lengths it gives can be trusted to skip the payload, and a large silo
// opens without reading its data (one small pread per record). A rotten
// payload in a sealed segment is found when it is read (GetPiece returns
// blocks.ErrCorrupt; a PutPiece of the same key may then replace it). A
// damaged header is reported and the scan searches forward for the next
// intact header. The active segment is read whole and every record
// checksum verified: its longest valid prefix is kept and the rest, a torn
// tail from a crash, is cut off, so each journal recovers to a prefix of
// what was appended, never with a hole (rot in synced bytes of the active
// segment also cuts there; the cut is logged, at error level when intact
// records follow it). A zero header followed by nothing but zeros ends the
// records cleanly (the preallocated tail; in a sealed segment, one a crash
// left between sealing and truncating, which Open then truncates). Any
// other bytes after the valid prefix of the active segment are cut and the
// tail written with zeros again, so that no stale record can ever line up
// behind later appends.
//
// We chose header scans over an index file written at seal time: there is
// one source of truth, nothing to keep consistent across crashes, and the
// cost is a pread of 80 bytes per record of a sealed segment at open (about
// 16,000 for a 64 MiB segment of 4 KiB pieces). An index file per sealed
// segment can be added later as a cache, verified against the segment size.
//
// # On-disk format
//
// Format version 1 (the record magic "CRN1" names it). The directory holds
// LOCK (flock'd while a Silo has the directory open) and segment files
// named by their id, 16 lower-case hex digits and ".seg"
// (0000000000000001.seg, ...; ids grow by one; the highest holding a record
// is the active segment, and one after it may be an all-zero spare). A
// segment file is a sequence of records, with no file header and no
// padding between records, optionally followed by zero bytes to the end of
// the file (a preallocated tail; silos before preallocation wrote none, and
// read such tails as a torn tail of the active segment, so both directions
// stay compatible). A record is an 80-byte header followed by the payload;
// integers are little-endian:
//
//	offset size field
//	0      4    magic "CRN1" (0x43 0x52 0x4e 0x31)
//	4      1    type: 1 piece, 2 tombstone, 3 journal record, 4 seal, 5 trim,
//	            6 sync mark (no key, no payload)
//	5      3    zero
//	8      4    payload length n (piece: <= blocks.MaxPiece; journal
//	            record: <= blocks.MaxRecord; other types: 0)
//	12     4    durable: how far into this segment a completed sync had
//	            reached when the record was written (0: unknown)
//	16     8    stamp (see above)
//	24     32   piece key (piece, tombstone) or log ID (journal types)
//	56     8    epoch (journal record, seal); else 0
//	64     8    seq (journal record, >= 1); before (trim, >= 1;
//	            0xffffffffffffffff drops the whole log); else 0
//	72     4    header CRC32C (Castagnoli) of bytes [0, 72)
//	76     4    record CRC32C (Castagnoli) of the payload followed by
//	            header bytes [0, 76)
//	80     n    payload
//
// A header is intact when its magic, header CRC, type and length bound
// hold; a record is intact when its record CRC also holds.
//
// # Torn tails and rot in the active segment
//
// A crash can leave the unsynced end of the active segment torn (page
// cache write-back persists pages in any order), so open keeps a prefix:
// it ends the records at the first bad one. But a bad record that a later
// intact record vouches for (its durable mark lies past the bad one) was
// synced, so it is rot, not a torn write: open reports it, indexes it if
// its header is intact (reads then find it corrupt, not absent) and goes
// on, so one rotten byte never costs the synced records after it. Close
// writes a sync mark after its final sync, so after a clean shutdown every
// record is vouched for; after a crash, rot in the records of the very last
// sync is still taken for a torn tail. Open syncs what it recovered before
// anything new is written, so later marks only vouch for durable bytes.
//
// # Errors
//
// Appends into a preallocated segment need no space; the disk fills when a
// new segment cannot be made, and ENOSPC (and EDQUOT) then come back as
// blocks.ErrNoSpace to the writer whose record needed it (a record written
// past the preallocated end that fails is cut off again), so the silo
// stays consistent, readable, and writable once space returns. A failed
// fdatasync, or a failed write of buffered records (already acknowledged to
// their writers), is sticky: the silo refuses writes and syncs until it is
// reopened (reopening rescans and cuts the torn tail).
package silo
