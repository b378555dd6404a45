// Package peer is Cairn's node-to-node data transport: it serves a node's
// silo to the other nodes of the cluster, so that a remote silo is a
// blocks.Holder, blocks.Journal and blocks.Walker like a local one. The
// redundancy layer (blocks/redundant) writes piece i of a block to holder i
// through a [Client]; a volume's journal is appended on remote holders the
// same way. It also carries mutable-block calls (Load, CompareAndSet) to a
// node that hosts the block's raft shard, for nodes that host none
// (mutable.go documents those messages).
//
// A [Server] serves one local holder on any net.Listener; a [Client] talks
// to one peer, multiplexing many requests on one connection (request IDs,
// replies in any order), reconnecting after the peer restarts. The protocol
// runs over any net.Conn, so a later layer can wrap it in TLS
// (tls.NewListener on the server, ClientOptions.DialContext on the client).
//
// # Handshake
//
// Before any request is served, each side proves it holds the cluster
// secret. With nc and ns 32 random bytes chosen by the client and the
// server, and idc and ids their node IDs:
//
//	client -> server  Hello      version(1) nc(32) len(1) idc
//	server -> client  Challenge  ns(32) len(1) ids
//	client -> server  Proof      HMAC-SHA256(secret, "cairn-peer-v1" "client" nc ns len(idc) idc len(ids) ids)
//	server -> client  Welcome    HMAC-SHA256(secret, "cairn-peer-v1" "server" nc ns len(idc) idc len(ids) ids)
//	               or Refused    (empty), then the server closes
//
// Each side compares the other's MAC in constant time (hmac.Equal). The
// client proves first, so a client without the secret learns only the
// server's nonce and node ID, and is refused; a server without the secret
// cannot check the client's proof, so it can only refuse too (and a server
// that sends a Welcome anyway fails the client's check of it). A proof is
// bound to both nonces, roles and IDs, so it is useless on another
// connection; it does allow offline guessing of a weak secret, so the
// cluster secret must be random (32 bytes from crypto/rand). The
// handshake authenticates, it does not encrypt: TLS comes from the
// connection underneath. The server bounds the whole
// handshake by ServerOptions.HandshakeTimeout; handshake frames carry
// request ID 0 and are limited to 289 bytes.
//
// # Frames
//
// Every message, handshake included, is one frame: a 20-byte header and a
// payload. Integers are big-endian.
//
//	offset size
//	0      4    payload length n
//	4      1    op (below)
//	5      1    status (replies); flags (requests); 0 elsewhere
//	6      2    reserved, zero
//	8      8    request ID, chosen by the client, echoed by the server
//	16     4    CRC32C (Castagnoli) of header bytes 0..15, then the payload
//	20     n    payload
//
// The reader checks n against the limit for the op and direction before it
// allocates: PutPiece 32+blocks.MaxPiece, PutPieces 2+256*36+1 MiB+64 KiB
// (msg.go), Append and AppendSync 48+blocks.MaxRecord,
// CompareAndSet 41+MaxMutablePayload, other
// requests 64 bytes; replies blocks.MaxPiece, stream batches
// 256 KiB+20+blocks.MaxRecord. An over-long length, a non-zero reserved
// field, an op not expected in that direction, a CRC mismatch or a payload
// that does not decode closes that connection (and only it); the server
// counts it in ServerStats.Malformed. A server runs at most
// ServerOptions.MaxInFlight requests and MaxInFlightBytes of request
// payload per connection, and 16 streams; past those its reader waits (TCP
// back-pressure). An unknown request op with a valid
// frame gets a reply with status 8 (bad request), so newer clients can
// probe older servers.
//
// The flags of a request: bit 0 (background) marks background work
// (anti-entropy repair, give-back: the client's context carries
// throttle.Background), which the server does not count as client
// activity (ServerOptions.ClientActivity). Other bits are zero; a server
// ignores bits it does not know, so older servers take flagged requests.
//
// # Requests and replies
//
//	op  request      payload                              reply payload (status 0)
//	1   PutPiece     key(32) data                         empty
//	2   GetPiece     key(32)                              data
//	3   HasPiece     key(32)                              1 byte: 0 or 1
//	4   DeletePiece  key(32)                              empty
//	5   Sync         empty                                empty
//	6   Append       log(32) epoch(8) seq(8) record       empty
//	7   Seal         log(32) epoch(8)                     empty
//	8   Replay       log(32) from(8)                      stream of records
//	9   Trim         log(32) before(8)                    empty
//	10  Walk         empty                                stream of keys
//	11  Load         id(32)                               version(8) payload
//	12  CompareAndSet id(32) want(8) flags(1) payload     version(8)
//	13  PutPieces    count(2) {key(32) len(4) data}...    count(2) {code(1) len(2) text}...
//	14  AppendSync   log(32) epoch(8) seq(8) record       empty
//	    (probe)      empty                                empty
//	15  PutAppendSync log(32) epoch(8) seq(8) len(4) record,
//	                 then PutPieces' request             PutPieces' reply
//	    (probe)      empty                                empty
//	21  HasPieces    count(2) {key(32)}...                bitmap, (count+7)/8 bytes
//	    (probe)      empty                                empty
//	22  GetAnyPiece  count(1) {key(32)}...                data (of the first key held)
//	    (probe)      empty                                empty
//	16  Credit       empty (names a stream by its ID)     none
//	17  Cancel       empty (names a stream by its ID)     none
//
// AppendSync is Append then Sync in one round trip: the server appends the
// record, then syncs its holder, and replies once both are done, so the
// record and every piece and record the holder took before it are durable
// (a volume's FLUSH saves the separate Sync's round trip). An empty
// AppendSync is a probe: a server that knows op 14 answers status 0 and
// does nothing, one that predates it answers status 8 (the probe fits the
// 64 bytes such a server reads of an unknown op; a real AppendSync may
// not, and would close the connection). A client probes once before its
// first AppendSync and, if the server predates the op, sends Append and
// Sync instead. It is an op rather than a request flag because an older
// server ignores flags it does not know and would reply to a flagged
// Append without syncing.
//
// PutAppendSync is PutPieces then AppendSync in one round trip (msg.go):
// the server puts the pieces, appends the record, syncs, and replies with
// each piece's outcome. A volume's FLUSH in a cluster sends each journal
// holder the pieces it holds with the record (the cluster's carry,
// internal/node), so that the FLUSH waits for one round trip instead of
// two. It is probed and falls back like AppendSync (pieces apart, then
// AppendSync).
//
// HasPieces asks which of up to 4096 keys the holder has (bit i of the
// reply, least significant bit first, for key i). A heal pass asks each
// node about the pieces of the blocks it checks, instead of fetching
// every node's whole key list (Walk), which grows with the cluster. It is
// probed and falls back (one HasPiece per key) like AppendSync.
//
// GetAnyPiece returns the piece of the first of up to 32 keys, in the
// request's order, that the holder has (status 1 when none). A node
// keeps its copy of a replicated block under the key of its rank when it
// got it; a read asks for the key of the node's rank now and the block's
// other keys in one round trip. It is probed and falls back (one
// GetPiece per key) like AppendSync.
//
// Replies are op 0x80 with a status: 0 OK, 1 not found, 2 corrupt, 3 no
// space, 4 fenced, 5 too large, 6 unavailable (the holder is closed or the
// server shutting down), 7 conflict, 8 bad request, 9 not hosted (Load and
// CompareAndSet: the server runs no replica of the block's raft shard),
// 255 other. A reply with
// a non-zero status carries the server's error text (at most 1 KiB); the
// client returns it wrapping the sentinel of blocks the status names.
//
// Walk and Replay stream: the server sends batches (op 0x81) of about
// 256 KiB (8192 keys of 32 bytes; or records, each epoch(8) seq(8) len(4)
// record) and ends with a reply (op 0x80) that carries the last items and
// the status. After each batch the server waits for a Credit from the
// client before sending the next; the client credits a batch as soon as it
// receives it, then runs its callback, so the server gathers the next batch
// meanwhile and neither side holds more than two batches. Cancel ends a
// stream early (the callback failed or the caller's context ended).
//
// # Performance
//
// BenchmarkPiece, 4 KiB pieces over loopback on this 2-core machine (client
// and server in one process, a memory store behind the server, load
// average about 6 from other work, so ±20%):
//
//	                 1 caller               32 callers
//	PutPiece  66-72k ops/s 270-295 MB/s  93-96k ops/s 383-394 MB/s
//	GetPiece  38-43k ops/s 155-178 MB/s  67-82k ops/s 274-334 MB/s
//
// Two connections (ClientOptions.Conns = 2) measured 97-100k puts/s and
// 85-97k gets/s at 32 callers: within the noise for puts, so the default
// is one connection. The server answers through a writer goroutine that
// coalesces replies into one write when several are ready, and writes
// directly when the connection is idle (no hand-off at low load).
//
// In a cluster the numbers that matter are per block pushed: a node
// writing a replicas = 3 volume puts two pieces on other nodes for every
// 4 KiB block. The client therefore (batch.go) gathers PutPiece calls made
// while another is in flight into PutPieces requests (TestPutBatches: 1280
// concurrent puts in about 100 requests), and leaves the frames of
// requests started while more than two are pending to a flusher goroutine
// that sends all that queued up in one write; a lone request is written
// and flushed at once, so a FLUSH at queue depth 1 pays no hand-off.
package peer
