package shardsm

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
)

// Snapshot stream format (what SaveSnapshot writes and RecoverFromSnapshot
// reads; dragonboat stores it in a file and streams it to replicas that fall
// behind):
//
//	magic "cairnss1" (8 bytes)
//	applied raft index (8 bytes BE)
//	per block, in ID order:
//	  0x01 | id (32) | version (8 BE, > 0) | payload length (4 BE, <= MaxPayload) | payload
//	end:
//	  0x00 | block count (8 BE) | CRC-32C (Castagnoli, 4 BE) of every byte before it
//
// A reader applies nothing unless the whole stream, trailer and CRC
// included, decodes.
const snapMagic = "cairnss1"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// WriteSnapshot writes a snapshot of applied index applied to w, with the
// blocks that next yields until it reports ok == false or an error. A
// payload next returns is written before next is called again, so it need
// only stay valid until then.
func WriteSnapshot(w io.Writer, applied uint64, next func() (id [32]byte, v Value, ok bool, err error)) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	crc := crc32.New(castagnoli)
	out := io.MultiWriter(bw, crc)
	var hdr [8 + 8]byte
	copy(hdr[:], snapMagic)
	binary.BigEndian.PutUint64(hdr[8:], applied)
	if _, err := out.Write(hdr[:]); err != nil {
		return err
	}
	var count uint64
	for {
		id, v, ok, err := next()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if len(v.Payload) > MaxPayload || v.Version == 0 {
			return fmt.Errorf("shardsm: snapshot of block %x: version %d, %d bytes", id, v.Version, len(v.Payload))
		}
		var rec [1 + 32 + 8 + 4]byte
		rec[0] = 1
		copy(rec[1:], id[:])
		binary.BigEndian.PutUint64(rec[33:], v.Version)
		binary.BigEndian.PutUint32(rec[41:], uint32(len(v.Payload)))
		if _, err := out.Write(rec[:]); err != nil {
			return err
		}
		if _, err := out.Write(v.Payload); err != nil {
			return err
		}
		count++
	}
	var end [1 + 8]byte
	binary.BigEndian.PutUint64(end[1:], count)
	if _, err := out.Write(end[:]); err != nil {
		return err
	}
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc.Sum32())
	if _, err := bw.Write(sum[:]); err != nil {
		return err
	}
	return bw.Flush()
}

// crcReader hashes what it reads.
type crcReader struct {
	r   *bufio.Reader
	crc hash.Hash32
}

func (c *crcReader) full(b []byte) error {
	if _, err := io.ReadFull(c.r, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("%w: snapshot truncated: %v", ErrBadCommand, err)
	}
	c.crc.Write(b)
	return nil
}

// ReadSnapshot decodes a snapshot stream, calling fn for each block (the
// payload slice is valid only during the call), and returns the applied
// index. fn's calls are not final until ReadSnapshot returns nil: a caller
// stages them (e.g. in a batch) and discards them on error. Malformed input
// yields an error wrapping ErrBadCommand; it never panics.
func ReadSnapshot(r io.Reader, fn func(id [32]byte, v Value) error) (uint64, error) {
	cr := &crcReader{r: bufio.NewReaderSize(r, 64<<10), crc: crc32.New(castagnoli)}
	var hdr [16]byte
	if err := cr.full(hdr[:]); err != nil {
		return 0, err
	}
	if string(hdr[:8]) != snapMagic {
		return 0, fmt.Errorf("%w: snapshot magic %q", ErrBadCommand, hdr[:8])
	}
	applied := binary.BigEndian.Uint64(hdr[8:])
	var count uint64
	payload := make([]byte, 0, 4096)
	for {
		var tag [1]byte
		if err := cr.full(tag[:]); err != nil {
			return 0, err
		}
		if tag[0] == 0 {
			break
		}
		if tag[0] != 1 {
			return 0, fmt.Errorf("%w: snapshot record tag %d", ErrBadCommand, tag[0])
		}
		var rec [32 + 8 + 4]byte
		if err := cr.full(rec[:]); err != nil {
			return 0, err
		}
		var id [32]byte
		copy(id[:], rec[:32])
		ver := binary.BigEndian.Uint64(rec[32:])
		n := binary.BigEndian.Uint32(rec[40:])
		if ver == 0 || n > MaxPayload {
			return 0, fmt.Errorf("%w: snapshot block %x: version %d, %d bytes", ErrBadCommand, id, ver, n)
		}
		if cap(payload) < int(n) {
			payload = make([]byte, n)
		}
		payload = payload[:n]
		if err := cr.full(payload); err != nil {
			return 0, err
		}
		if err := fn(id, Value{Version: ver, Payload: payload}); err != nil {
			return 0, err
		}
		count++
	}
	var cnt [8]byte
	if err := cr.full(cnt[:]); err != nil {
		return 0, err
	}
	if got := binary.BigEndian.Uint64(cnt[:]); got != count {
		return 0, fmt.Errorf("%w: snapshot trailer counts %d blocks, read %d", ErrBadCommand, got, count)
	}
	want := cr.crc.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(cr.r, sum[:]); err != nil {
		return 0, fmt.Errorf("%w: snapshot truncated before checksum", ErrBadCommand)
	}
	if binary.BigEndian.Uint32(sum[:]) != want {
		return 0, fmt.Errorf("%w: snapshot checksum mismatch", ErrBadCommand)
	}
	return applied, nil
}
