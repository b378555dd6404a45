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
// Segments are preallocated to Options.SegmentSize bytes, a spare one
// ahead of need by a background goroutine: reserved with fallocate, or,
// while the workload syncs often, written with zeros so that an fdatasync
// writes data, not extents (see active.go for the measurements). When the
// active segment reaches Options.SegmentSize it is sealed: its buffer is
// written out and its zero tail truncated, but it is not synced there: it
// joins a list of unsynced sealed segments, and every Sync fdatasyncs them
// all (then the active segment) before it completes, so a writer that
// fills segments faster than the disk takes them never waits for the disk
// at a roll (a background Sync runs once 8 segments wait). The spare
// becomes active (made on the spot, reserved, if not ready) and starts
// with a sync mark recording the sealed segment's size.
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
// Options.SegmentSize zero bytes right after the last segment is kept as
// the spare.
//
// The segments a crash may have torn are the last one and those before it
// back to the last segment holding an intact record with a durable mark
// (such a record was written after a Sync completed while its segment was
// active, and that Sync had made every earlier segment durable). They are
// read whole, every record checksum verified, in order, as one log: its
// longest valid prefix is kept and the rest, a torn tail, cut off, so each
// journal and the pieces around it recover to a prefix of what was
// written, never with a hole. A torn record in one of them cuts it there
// and drops the segments after it (everything in them was written later
// and never synced). A segment whose records end in zeros before the
// sealed size the next segment's first mark records lost its last records
// (pages never written back read as zeros): that is a torn tail too. Rot
// in synced bytes is told from a torn tail by durable marks (below). A
// zero header followed by nothing but zeros ends a segment's records
// cleanly (the preallocated tail; in a sealed segment, one a crash left
// between sealing and truncating, which Open then truncates). Any other
// bytes after the valid prefix of the active segment are cut and the tail
// written with zeros again, so that no stale record can ever line up
// behind later appends. Open syncs the segments it read whole.
//
// The segments before those are durable whole and scanned by their
// headers only: the header has its own checksum, so the lengths it gives
// can be trusted to skip the payload, and a large silo opens without
// reading its data (one small pread per record). A rotten payload in such
// a segment is found when it is read (GetPiece returns blocks.ErrCorrupt;
// a PutPiece of the same key may then replace it). A damaged header is
// reported and the scan searches forward for the next intact header.
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
//	            0xffffffffffffffff drops the whole log); for a sync mark
//	            that starts a segment, the size of the segment sealed
//	            before it (0 in other marks and silos before lazy
//	            sealing); else 0
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
