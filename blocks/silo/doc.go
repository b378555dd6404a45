// Package silo is a node's local block storage: a [blocks.Holder],
// [blocks.Walker] and [blocks.Journal] kept in append-only segment files in
// one directory, built for millions of small pieces (4 KiB up to
// blocks.MaxPiece) and for crashes.
//
// # Model
//
// Every change (a piece, a tombstone, a journal record, a seal, a trim) is
// one record appended to the active segment with a pwrite, and an
// in-memory index maps each key to its record (segment, offset, length).
// Writes are write-back: PutPiece and Append return once the record is in
// the page cache. Sync is group commit: one fdatasync of the active segment
// makes everything written before it durable, pieces and journal records
// alike, and concurrent Sync callers share it (a caller arriving while one
// is in flight waits for the next, which serves everyone queued). When the
// active segment reaches Options.SegmentSize it is fdatasynced (sealed) and
// a new one is created, with the directory synced, so every segment but the
// last is durable whole (writers wait for that fdatasync, once per segment;
// with regular Syncs little is left to flush). Seal syncs before it returns.
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
// Open lists the segment files and scans them in order. Sealed segments are
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
// records follow it).
//
// We chose header scans over an index file written at seal time: there is
// one source of truth, nothing to keep consistent across crashes, and the
// cost is a pread of 80 bytes per record of a sealed segment at open (about
// 16,000 for a 64 MiB segment of 4 KiB pieces). An index file per sealed
// segment can be added later as a cache, verified against the segment size.
//
// # On-disk format
//
// The directory holds LOCK (flock'd while a Silo has the directory open)
// and segment files named by their id, 16 lower-case hex digits and ".seg"
// (0000000000000001.seg, ...; ids grow by one; the highest is the active
// segment). A segment file is a sequence of records, with no file header
// and no padding. A record is an 80-byte header followed by the payload;
// integers are little-endian:
//
//	offset size field
//	0      4    magic "CRN1" (0x43 0x52 0x4e 0x31)
//	4      1    type: 1 piece, 2 tombstone, 3 journal record, 4 seal, 5 trim
//	5      3    zero
//	8      4    payload length n (piece: <= blocks.MaxPiece; journal
//	            record: <= blocks.MaxRecord; other types: 0)
//	12     4    zero
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
// # Errors
//
// ENOSPC (and EDQUOT) from the file system come back as blocks.ErrNoSpace;
// a failed write is cut off again, so the silo stays consistent, readable,
// and writable once space returns. A failed fdatasync is sticky: the kernel
// may have dropped the dirty pages, so the silo refuses writes and syncs
// until it is reopened (reopening rescans and cuts the torn tail).
package silo
