package peer

import (
	"encoding/binary"
	"fmt"

	"cairn/blocks"
)

// Message payloads (see the package doc for the table). Decoders never
// panic and never retain more than the payload they are given.

func errMalformed(what string, n int) error {
	return fmt.Errorf("%w: %s payload of %d bytes", ErrProtocol, what, n)
}

// decodeKey decodes a payload that is exactly one 32-byte key.
func decodeKey(p []byte) (blocks.Addr, error) {
	var k blocks.Addr
	if len(p) != len(k) {
		return k, errMalformed("key", len(p))
	}
	copy(k[:], p)
	return k, nil
}

// decodePut splits a PutPiece payload into key and data (data aliases p).
func decodePut(p []byte) (blocks.Addr, []byte, error) {
	var k blocks.Addr
	if len(p) < len(k) || len(p) > maxPutPiece {
		return k, nil, errMalformed("put-piece", len(p))
	}
	copy(k[:], p)
	return k, p[len(k):], nil
}

// logHeader is the fixed part of Append, Seal, Trim and Replay requests: a
// log ID and one or two uint64s.
func encodeLogHeader(log blocks.ID, a ...uint64) []byte {
	b := make([]byte, 32, 32+8*len(a))
	copy(b, log[:])
	for _, v := range a {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return b
}

// decodeLogHeader decodes a log ID and n uint64s from the front of p and
// returns the rest.
func decodeLogHeader(what string, p []byte, n int) (blocks.ID, []uint64, []byte, error) {
	var id blocks.ID
	if len(p) < 32+8*n {
		return id, nil, nil, errMalformed(what, len(p))
	}
	copy(id[:], p)
	vs := make([]uint64, n)
	for i := range vs {
		vs[i] = binary.BigEndian.Uint64(p[32+8*i:])
	}
	return id, vs, p[32+8*n:], nil
}

// decodeAppend decodes an Append payload (rec aliases p).
func decodeAppend(p []byte) (log blocks.ID, epoch blocks.Epoch, seq uint64, rec []byte, err error) {
	if len(p) > maxAppend {
		return log, 0, 0, nil, errMalformed("append", len(p))
	}
	log, vs, rec, err := decodeLogHeader("append", p, 2)
	if err != nil {
		return log, 0, 0, nil, err
	}
	return log, blocks.Epoch(vs[0]), vs[1], rec, nil
}

// decodeLogOp decodes a Seal, Trim or Replay payload: exactly a log ID and
// one uint64.
func decodeLogOp(what string, p []byte) (blocks.ID, uint64, error) {
	log, vs, rest, err := decodeLogHeader(what, p, 1)
	if err != nil {
		return log, 0, err
	}
	if len(rest) != 0 {
		return log, 0, errMalformed(what, len(p))
	}
	return log, vs[0], nil
}

// A walk batch is a run of 32-byte keys.
func decodeWalkBatch(p []byte, fn func(blocks.Addr) error) error {
	if len(p)%32 != 0 {
		return errMalformed("walk batch", len(p))
	}
	for i := 0; i < len(p); i += 32 {
		if err := fn(blocks.Addr(p[i : i+32])); err != nil {
			return err
		}
	}
	return nil
}

// replayItemHeader is the size of a replay item's header: epoch, seq, length.
const replayItemHeader = 8 + 8 + 4

func appendReplayItem(b []byte, epoch blocks.Epoch, seq uint64, rec []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(epoch))
	b = binary.BigEndian.AppendUint64(b, seq)
	b = binary.BigEndian.AppendUint32(b, uint32(len(rec)))
	return append(b, rec...)
}

// decodeReplayBatch calls fn for each record of a replay batch (rec aliases
// p). The whole batch is checked before fn is first called, so that a
// malformed batch delivers nothing.
func decodeReplayBatch(p []byte, fn func(epoch blocks.Epoch, seq uint64, rec []byte) error) error {
	for q := p; len(q) > 0; {
		if len(q) < replayItemHeader {
			return errMalformed("replay batch", len(p))
		}
		n := binary.BigEndian.Uint32(q[16:20])
		if n > blocks.MaxRecord || uint64(n) > uint64(len(q)-replayItemHeader) {
			return errMalformed("replay batch", len(p))
		}
		q = q[replayItemHeader+int(n):]
	}
	for len(p) > 0 {
		epoch := blocks.Epoch(binary.BigEndian.Uint64(p[0:8]))
		seq := binary.BigEndian.Uint64(p[8:16])
		n := int(binary.BigEndian.Uint32(p[16:20]))
		if err := fn(epoch, seq, p[replayItemHeader:replayItemHeader+n:replayItemHeader+n]); err != nil {
			return err
		}
		p = p[replayItemHeader+n:]
	}
	return nil
}

// decodeHas decodes a HasPiece reply: one byte, 0 or 1.
func decodeHas(p []byte) (bool, error) {
	if len(p) != 1 || p[0] > 1 {
		return false, errMalformed("has-piece reply", len(p))
	}
	return p[0] == 1, nil
}

// protocolVersion is the version a Hello carries.
const protocolVersion = 1

// hello is the client's first message: version, nonce, node ID.
type hello struct {
	version byte
	nonce   [32]byte
	nodeID  string
}

func (h hello) encode() []byte {
	b := append([]byte{h.version}, h.nonce[:]...)
	b = append(b, byte(len(h.nodeID)))
	return append(b, h.nodeID...)
}

func decodeHello(p []byte) (hello, error) {
	var h hello
	if len(p) < 1 {
		return h, errMalformed("hello", len(p))
	}
	h.version = p[0]
	ch, err := decodeChallenge(p[1:])
	h.nonce, h.nodeID = ch.nonce, ch.nodeID
	return h, err
}

// challenge is the server's answer to hello: its nonce and node ID.
type challenge struct {
	nonce  [32]byte
	nodeID string
}

func (c challenge) encode() []byte {
	b := append(c.nonce[:0:0], c.nonce[:]...)
	b = append(b, byte(len(c.nodeID)))
	return append(b, c.nodeID...)
}

func decodeChallenge(p []byte) (challenge, error) {
	var c challenge
	if len(p) < 33 || len(p) != 33+int(p[32]) {
		return c, errMalformed("handshake", len(p))
	}
	copy(c.nonce[:], p)
	c.nodeID = string(p[33:])
	return c, nil
}

// PutPieces (op 13) carries several PutPiece requests in one frame:
//
//	request  count(2) then count times: key(32) len(4) data(len)
//	reply    count(2) then count times: code(1) len(2) text(len)
//
// count is 1..maxBatchPieces (or 0 with nothing after it: a client's
// probe, answered with count 0) and each data at most maxBatchPiece bytes;
// the reply (status 0) has one entry per piece, in request order: code 0
// (stored, text empty) or the status code PutPiece would have replied
// with and its error text (at most maxBatchErrText bytes). A frame-level
// error status (bad request from a server that predates the op,
// unavailable at shutdown) stands for every piece.
const (
	maxBatchPieces  = 256
	maxBatchPiece   = 64 << 10 // larger pieces go alone, as PutPiece
	maxBatchBytes   = 1 << 20  // data bytes a batch gathers before it is sent
	maxBatchErrText = 256
	// maxPutPieces bounds a request: the last piece may start just below
	// maxBatchBytes.
	maxPutPieces = 2 + maxBatchPieces*(32+4) + maxBatchBytes + maxBatchPiece
)

// putEntry is one piece of a PutPieces request (data aliases the payload).
type putEntry struct {
	key  blocks.Addr
	data []byte
}

// appendPutEntry appends one piece to a PutPieces payload under
// construction (the caller writes the count at the front).
func appendPutEntry(b []byte, key blocks.Addr, data []byte) []byte {
	b = append(b, key[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// decodePutPieces decodes a PutPieces payload; the data alias p.
func decodePutPieces(p []byte) ([]putEntry, error) {
	if len(p) < 2 || len(p) > maxPutPieces {
		return nil, errMalformed("put-pieces", len(p))
	}
	n := int(binary.BigEndian.Uint16(p))
	if n == 0 && len(p) == 2 {
		return nil, nil // the probe of a client (see batch.go)
	}
	if n < 1 || n > maxBatchPieces {
		return nil, fmt.Errorf("%w: put-pieces of %d pieces", ErrProtocol, n)
	}
	out := make([]putEntry, n)
	rest := p[2:]
	for i := range out {
		if len(rest) < 36 {
			return nil, errMalformed("put-pieces", len(p))
		}
		copy(out[i].key[:], rest)
		size := binary.BigEndian.Uint32(rest[32:])
		rest = rest[36:]
		if uint64(size) > uint64(len(rest)) || size > maxBatchPiece {
			return nil, errMalformed("put-pieces", len(p))
		}
		out[i].data = rest[:size:size]
		rest = rest[size:]
	}
	if len(rest) != 0 {
		return nil, errMalformed("put-pieces", len(p))
	}
	return out, nil
}

// encodePutResults encodes the reply of a PutPieces request from the
// error of each piece.
func encodePutResults(errs []error) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(errs)))
	for _, err := range errs {
		if err == nil {
			b = append(b, codeOK, 0, 0)
			continue
		}
		msg := err.Error()
		if len(msg) > maxBatchErrText {
			msg = msg[:maxBatchErrText]
		}
		b = append(b, errorCode(err))
		b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
		b = append(b, msg...)
	}
	return b
}

// decodePutResults decodes the reply of a PutPieces request of n pieces:
// nil for a stored piece, else the error its holder gave.
func decodePutResults(p []byte, n int) ([]error, error) {
	if len(p) < 2 || int(binary.BigEndian.Uint16(p)) != n {
		return nil, errMalformed("put-pieces reply", len(p))
	}
	errs := make([]error, n)
	rest := p[2:]
	for i := range errs {
		if len(rest) < 3 {
			return nil, errMalformed("put-pieces reply", len(p))
		}
		code, size := rest[0], int(binary.BigEndian.Uint16(rest[1:]))
		rest = rest[3:]
		if size > len(rest) || size > maxBatchErrText || (code == codeOK && size != 0) {
			return nil, errMalformed("put-pieces reply", len(p))
		}
		if code != codeOK {
			errs[i] = &remoteError{msg: string(rest[:size]), sentinel: codeSentinels[code]}
		}
		rest = rest[size:]
	}
	if len(rest) != 0 {
		return nil, errMalformed("put-pieces reply", len(p))
	}
	return errs, nil
}

// PutAppendSync (op 15) is PutPieces, then AppendSync, in one request:
//
//	request  log(32) epoch(8) seq(8) len(4) record(len), then a PutPieces
//	         request (count(2) then count times: key(32) len(4) data(len))
//	reply    a PutPieces reply (count(2) then count times: code(1) len(2) text(len))
//
// count is 1..maxBatchPieces and each data at most maxBatchPiece bytes, as
// in PutPieces. The server puts the pieces in order, then appends the
// record, then syncs its holder; it replies status 0 once the record and
// every piece it stored are durable, with one outcome per piece. A piece
// that failed leaves the record appended (the client puts the piece
// elsewhere). A frame-level error status (the append or the sync failed)
// stands for the whole request: nothing is known to be durable, and any
// piece may or may not have been stored. An empty payload is a probe, as
// for AppendSync.
const maxPutAppendSync = 32 + 8 + 8 + 4 + blocks.MaxRecord + maxPutPieces

// Piece is one piece carried by [Client.PutAppendSync].
type Piece struct {
	Key  blocks.Addr
	Data []byte
}

// encodePutAppendSync encodes a PutAppendSync payload.
func encodePutAppendSync(log blocks.ID, epoch blocks.Epoch, seq uint64, rec []byte, pieces []Piece) []byte {
	n := 32 + 8 + 8 + 4 + len(rec) + 2
	for _, p := range pieces {
		n += 36 + len(p.Data)
	}
	b := make([]byte, 0, n)
	b = append(b, log[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(epoch))
	b = binary.BigEndian.AppendUint64(b, seq)
	b = binary.BigEndian.AppendUint32(b, uint32(len(rec)))
	b = append(b, rec...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(pieces)))
	for _, p := range pieces {
		b = appendPutEntry(b, p.Key, p.Data)
	}
	return b
}

// decodePutAppendSync decodes a non-empty PutAppendSync payload; rec and
// the pieces' data alias p.
func decodePutAppendSync(p []byte) (log blocks.ID, epoch blocks.Epoch, seq uint64, rec []byte, pieces []putEntry, err error) {
	if len(p) > maxPutAppendSync {
		return log, 0, 0, nil, nil, errMalformed("put-append-sync", len(p))
	}
	log, vs, rest, err := decodeLogHeader("put-append-sync", p, 2)
	if err != nil {
		return log, 0, 0, nil, nil, err
	}
	if len(rest) < 4 {
		return log, 0, 0, nil, nil, errMalformed("put-append-sync", len(p))
	}
	size := binary.BigEndian.Uint32(rest)
	rest = rest[4:]
	if uint64(size) > uint64(len(rest)) || size > blocks.MaxRecord {
		return log, 0, 0, nil, nil, errMalformed("put-append-sync", len(p))
	}
	rec = rest[:size:size]
	pieces, err = decodePutPieces(rest[size:])
	if err != nil {
		return log, 0, 0, nil, nil, err
	}
	if len(pieces) == 0 {
		return log, 0, 0, nil, nil, fmt.Errorf("%w: put-append-sync without pieces", ErrProtocol)
	}
	return log, blocks.Epoch(vs[0]), vs[1], rec, pieces, nil
}

// HasPieces (op 21) asks which of up to MaxHasPieces keys the holder
// has. Request: count(2) then count keys of 32 bytes (count 1 to
// MaxHasPieces); an empty request is a probe, answered with an empty
// reply. Reply: a bitmap of (count+7)/8 bytes, bit i (byte i/8, bit i%8
// from the least significant) set when the holder has key i; the bits
// past count are zero.

// encodeHasPieces encodes a HasPieces request of 1 to MaxHasPieces keys.
func encodeHasPieces(keys []blocks.Addr) []byte {
	b := make([]byte, 2, 2+32*len(keys))
	binary.BigEndian.PutUint16(b, uint16(len(keys)))
	return appendKeys(b, keys)
}

// decodeHasPieces decodes a HasPieces request; nil keys is the probe.
func decodeHasPieces(p []byte) ([]blocks.Addr, error) {
	if len(p) == 0 {
		return nil, nil
	}
	if len(p) < 2 {
		return nil, errMalformed("has-pieces", len(p))
	}
	n := int(binary.BigEndian.Uint16(p))
	if n < 1 || n > MaxHasPieces || len(p) != 2+32*n {
		return nil, errMalformed("has-pieces", len(p))
	}
	return splitKeys(p[2:]), nil
}

// GetAnyPiece (op 22) asks for the first of up to MaxAnyPiece keys, in
// the request's order, that the holder has. Request: count(1) then count
// keys of 32 bytes (count 1 to MaxAnyPiece); an empty request is a probe,
// answered with an empty reply. Reply: the piece, as GetPiece's; status 1
// (not found) when the holder has none of the keys. A node's copy of a
// replicated block may sit under the key of a rank it had before (see
// internal/node, slot.FindReplica): a read asks for the key of its rank
// and the others in one round trip.

// encodeGetAnyPiece encodes a GetAnyPiece request of 1 to MaxAnyPiece keys.
func encodeGetAnyPiece(keys []blocks.Addr) []byte {
	b := make([]byte, 1, 1+32*len(keys))
	b[0] = byte(len(keys))
	return appendKeys(b, keys)
}

// decodeGetAnyPiece decodes a GetAnyPiece request; nil keys is the probe.
func decodeGetAnyPiece(p []byte) ([]blocks.Addr, error) {
	if len(p) == 0 {
		return nil, nil
	}
	n := int(p[0])
	if n < 1 || n > MaxAnyPiece || len(p) != 1+32*n {
		return nil, errMalformed("get-any-piece", len(p))
	}
	return splitKeys(p[1:]), nil
}

// appendKeys appends keys, 32 bytes each, to b (the key lists of
// HasPieces and GetAnyPiece).
func appendKeys(b []byte, keys []blocks.Addr) []byte {
	for _, k := range keys {
		b = append(b, k[:]...)
	}
	return b
}

// splitKeys returns the keys of p, a whole number of 32-byte keys (the
// caller checked its length).
func splitKeys(p []byte) []blocks.Addr {
	keys := make([]blocks.Addr, len(p)/32)
	for i := range keys {
		keys[i] = blocks.Addr(p[32*i : 32*(i+1)])
	}
	return keys
}

// encodeHasBitmap encodes a HasPieces reply.
func encodeHasBitmap(has []bool) []byte {
	b := make([]byte, (len(has)+7)/8)
	for i, ok := range has {
		if ok {
			b[i/8] |= 1 << (i % 8)
		}
	}
	return b
}

// decodeHasBitmap decodes the reply to a HasPieces request of n keys.
func decodeHasBitmap(p []byte, n int) ([]bool, error) {
	if n < 0 || len(p) != (n+7)/8 || (n%8 != 0 && p[len(p)-1]>>(n%8) != 0) {
		return nil, errMalformed("has-pieces reply", len(p))
	}
	has := make([]bool, n)
	for i := range has {
		has[i] = p[i/8]&(1<<(i%8)) != 0
	}
	return has, nil
}
