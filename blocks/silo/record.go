package silo

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"cairn/blocks"
	"cairn/internal/crc32c"
)

// Record types. The values are on disk: never renumber them.
const (
	recPiece   byte = 1 // a piece: key, payload
	recTomb    byte = 2 // a tombstone: key
	recJournal byte = 3 // a journal record: log, epoch (a), seq (b), payload
	recSeal    byte = 4 // a journal seal: log, epoch (a)
	recTrim    byte = 5 // a journal trim: log, before (b); MaxUint64 drops the log
	recMark    byte = 6 // a sync mark: no key, no payload (see header.durable)
)

const (
	hdrSize  = 80
	hdrMagic = 0x314e5243 // "CRN1" little-endian
	// maxPayload bounds the length field a decoder accepts for any type.
	maxPayload = blocks.MaxPiece
)

// header is a decoded record header (see doc.go for the layout).
type header struct {
	typ byte
	n   uint32 // payload length
	// durable is how far into this record's segment a completed sync had
	// reached when the record was written (0: unknown). At open, a bad
	// record below a later record's durable mark was synced, so it is rot,
	// not a torn write: the scan steps over it instead of cutting there.
	durable uint32
	stamp   uint64
	key     [32]byte // piece key or log ID
	a       uint64   // epoch (journal record, seal)
	b       uint64   // seq (journal record) or before (trim)
	hcrc    uint32
	crc     uint32
}

// errBadHeader reports a header that is not a record header (bad magic,
// checksum, type or length). It never leaves the package unwrapped.
var errBadHeader = errors.New("silo: bad record header")

// payloadMax returns the largest payload a record of type typ may carry.
func payloadMax(typ byte) uint32 {
	switch typ {
	case recPiece:
		return blocks.MaxPiece
	case recJournal:
		return blocks.MaxRecord
	default:
		return 0
	}
}

// putHeader encodes h into b[:hdrSize], computing the header checksum and,
// from payloadCRC (the CRC32C of the payload), the record checksum.
func putHeader(b []byte, h *header, payloadCRC uint32) {
	_ = b[hdrSize-1]
	binary.LittleEndian.PutUint32(b[0:], hdrMagic)
	b[4], b[5], b[6], b[7] = h.typ, 0, 0, 0
	binary.LittleEndian.PutUint32(b[8:], h.n)
	binary.LittleEndian.PutUint32(b[12:], h.durable)
	binary.LittleEndian.PutUint64(b[16:], h.stamp)
	copy(b[24:56], h.key[:])
	binary.LittleEndian.PutUint64(b[56:], h.a)
	binary.LittleEndian.PutUint64(b[64:], h.b)
	h.hcrc = crc32c.Checksum(b[:72])
	binary.LittleEndian.PutUint32(b[72:], h.hcrc)
	h.crc = crc32c.Update(payloadCRC, b[:76])
	binary.LittleEndian.PutUint32(b[76:], h.crc)
}

// decodeHeader decodes and checks b[:hdrSize]: magic, header checksum,
// type and length bound. It does not check the record checksum, which
// needs the payload (see checkRecord).
func decodeHeader(b []byte, h *header) error {
	if len(b) < hdrSize {
		return fmt.Errorf("%w: short (%d bytes)", errBadHeader, len(b))
	}
	if crc32c.Checksum(b[:72]) != binary.LittleEndian.Uint32(b[72:]) {
		return fmt.Errorf("%w: header checksum mismatch", errBadHeader)
	}
	return decodeFields(b, h)
}

// decodeFields is decodeHeader without the header checksum, for a caller
// that checks the record checksum next, which covers the same header
// bytes (views: one short checksum fewer per record of a large read).
// Nothing it decodes may be trusted until then; b must hold hdrSize bytes
// or more.
func decodeFields(b []byte, h *header) error {
	if len(b) < hdrSize {
		return fmt.Errorf("%w: short (%d bytes)", errBadHeader, len(b))
	}
	if binary.LittleEndian.Uint32(b[0:]) != hdrMagic {
		return fmt.Errorf("%w: bad magic", errBadHeader)
	}
	h.hcrc = binary.LittleEndian.Uint32(b[72:])
	h.typ = b[4]
	h.n = binary.LittleEndian.Uint32(b[8:])
	h.durable = binary.LittleEndian.Uint32(b[12:])
	h.stamp = binary.LittleEndian.Uint64(b[16:])
	copy(h.key[:], b[24:56])
	h.a = binary.LittleEndian.Uint64(b[56:])
	h.b = binary.LittleEndian.Uint64(b[64:])
	h.crc = binary.LittleEndian.Uint32(b[76:])
	switch h.typ {
	case recPiece, recTomb, recJournal, recSeal, recTrim, recMark:
	default:
		return fmt.Errorf("%w: unknown type %d", errBadHeader, h.typ)
	}
	if h.n > payloadMax(h.typ) {
		return fmt.Errorf("%w: type %d with %d payload bytes", errBadHeader, h.typ, h.n)
	}
	if h.typ == recJournal && h.b == 0 {
		return fmt.Errorf("%w: journal record with seq 0", errBadHeader)
	}
	if h.typ == recTrim && h.b == 0 {
		return fmt.Errorf("%w: trim before 0", errBadHeader)
	}
	return nil
}

// checkRecord reports whether rec (a whole record: header then payload,
// whose header decoded into h) carries its record checksum.
func checkRecord(rec []byte, h *header) bool {
	if len(rec) != hdrSize+int(h.n) {
		return false
	}
	return recordCRC(crc32c.Checksum(rec[hdrSize:]), rec) == h.crc
}

// recordCRC returns the record checksum of rec (a whole record) given
// the CRC-32C of its payload: the payload's, continued over the header up
// to the checksum field.
func recordCRC(payload uint32, rec []byte) uint32 {
	return crc32c.Update(payload, rec[:76])
}

// recordCRC4 is recordCRC of four records at once (crc32c.Update4): crc
// holds their payloads' CRC-32C before and their record checksums after.
func recordCRC4(crc *[4]uint32, recs *[4][]byte) {
	hdrs := [4][]byte{recs[0][:76], recs[1][:76], recs[2][:76], recs[3][:76]}
	crc32c.Update4(crc, &hdrs)
}

// isDrop reports whether a trim header drops the whole log.
func (h *header) isDrop() bool { return h.typ == recTrim && h.b == math.MaxUint64 }
