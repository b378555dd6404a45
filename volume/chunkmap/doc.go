// Package chunkmap is the chunk map of a virtual disk: for each chunk index
// the address of the block that holds the chunk's data, or the zero address
// for a hole (a chunk that reads as zeros).
//
// # Model
//
// The map is a tree of immutable map pages (a Merkle tree). With E entries
// per page (Options.PageEntries), a leaf page (level 0) holds the addresses
// of E consecutive chunks, and an inner page at level l holds the addresses
// of E child pages at level l-1, each covering E^l chunks. The root is the
// single page at the level h, the smallest h >= 0 with E^(h+1) >= n for a
// map of n chunks, so the depth follows from n and E alone. Page i at level
// l covers chunks [i*E^(l+1), (i+1)*E^(l+1)).
//
// A page whose entries are all zero (an all-hole subtree) is never stored:
// its parent holds the zero address, and the root of an all-hole map is the
// zero address. Entries at or beyond n are always zero. The tree is
// therefore canonical: equal contents, n-height and E give equal pages, and
// (for a deterministic store) an equal root address; and a change to one
// chunk rewrites only the pages on its path, so two roots share every other
// page (snapshots and clones are copies of a root).
//
// # Page format (version 1)
//
// Every integer is big-endian.
//
//	offset  size        field
//	0       4           magic "CMPG"
//	4       1           format version, 1
//	5       1           level: 0 for a leaf, l for an inner page (at most 64)
//	6       4           E, entries per page (2 .. MaxPageEntries)
//	10      ceil(E/8)   bitmap: bit (i%8) of byte i/8 (LSB first) set when
//	                    entry i is non-zero; bits at or beyond E are zero
//	...     32*k        the k non-zero entries (k = bits set, k >= 1), in
//	                    ascending entry order: chunk addresses in a leaf,
//	                    child page addresses in an inner page
//
// The encoding is canonical (one page, one byte string) and its length is
// exact; a page with no non-zero entry, a zero address among the listed
// entries, trailing bytes or an unknown version are rejected with an error
// wrapping blocks.ErrCorrupt. Sparse pages are small: a leaf with one chunk
// of 1024 is 10+128+32 = 170 bytes; a full one is 32,906 bytes.
//
// # Memory
//
// Pages changed since the last Flush (dirty pages) stay in memory until
// Flush writes them, bottom-up, with store.Put; they are not bounded by
// Options.CacheBytes (the volume layer checkpoints when DirtyPages grows).
// Clean pages live in an LRU cache bounded by Options.CacheBytes and are
// re-read from the store on a miss, so a 1 TiB map opens and serves with a
// few MiB. Each cached page is accounted as 32*E bytes plus a fixed
// per-page overhead (see PageBytes).
package chunkmap
