// Package shardsm is the replicated state machine of one consensus shard:
// the mutable blocks whose IDs hash to that shard, kept on disk in a Pebble
// database shared by every shard of a host. It implements dragonboat's
// IOnDiskStateMachine; package consensus is its only user.
//
// # Why on disk, in one Pebble database
//
// Mutable blocks are small, but a node may hold hundreds of shard replicas
// and many volume roots and catalogues; an in-memory state machine would
// have to be rebuilt from a full snapshot plus log replay at every start
// and would hold every block in memory. An IOnDiskStateMachine keeps the
// blocks on disk, restarts from its own applied index, and dragonboat only
// streams a full snapshot to a replica that fell behind the compacted log.
// One Pebble database per host (keys prefixed by shard) rather than one per
// shard keeps files, memtables and fsyncs shared.
//
// # Commands (the raft log entries)
//
// A command is a compare-and-set of one mutable block:
//
//	offset  size  field
//	0       1     format, always 1
//	1       1     op: 1 = set, 2 = delete
//	2       32    block ID
//	34      8     want version, big-endian
//	42      n     payload (set only; a delete carries no payload)
//
// An empty payload with op set is a block with an empty payload, not a
// delete. The command is applied if the block's current version equals the
// want version (0 = absent): a set stores the payload under version want+1,
// a delete removes the block. The state machine never fails on a malformed
// command: it answers StatusBad, so that a bad entry cannot halt a replica.
//
// # Results
//
// The result of an applied command (dragonboat's sm.Result) carries the
// status in Value (see Status) and the version in Data, as 8 bytes
// big-endian: the new version on StatusOK (0 after a delete), the current
// version on StatusConflict, 0 on StatusBad.
package shardsm

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Command format constants. They fix the raft log format: changing them
// makes old logs unreadable.
const (
	cmdFormat   = 1
	OpSet       = 1
	OpDelete    = 2
	cmdHeader   = 2 + 32 + 8
	resultBytes = 8
)

// MaxPayload is the largest payload a command may carry. It bounds what a
// decoder accepts; package consensus enforces its own (equal or smaller)
// limit before proposing.
const MaxPayload = 1 << 20

// ErrBadCommand marks a command or snapshot that does not decode.
var ErrBadCommand = errors.New("shardsm: malformed command")

// Command is one decoded compare-and-set.
type Command struct {
	Op      byte
	ID      [32]byte
	Want    uint64
	Payload []byte // nil for OpDelete; for OpSet, never nil (may be empty)
}

// Encode appends the encoding of c to dst and returns it. An OpSet with a
// nil payload is encoded as an empty payload.
func (c Command) Encode(dst []byte) []byte {
	dst = append(dst, cmdFormat, c.Op)
	dst = append(dst, c.ID[:]...)
	dst = binary.BigEndian.AppendUint64(dst, c.Want)
	if c.Op == OpSet {
		dst = append(dst, c.Payload...)
	}
	return dst
}

// DecodeCommand decodes b. The returned Payload aliases b. Errors wrap
// ErrBadCommand.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	if len(b) < cmdHeader {
		return c, fmt.Errorf("%w: %d bytes, want at least %d", ErrBadCommand, len(b), cmdHeader)
	}
	if b[0] != cmdFormat {
		return c, fmt.Errorf("%w: format %d", ErrBadCommand, b[0])
	}
	c.Op = b[1]
	copy(c.ID[:], b[2:34])
	c.Want = binary.BigEndian.Uint64(b[34:42])
	rest := b[cmdHeader:]
	switch c.Op {
	case OpSet:
		if len(rest) > MaxPayload {
			return Command{}, fmt.Errorf("%w: payload of %d bytes exceeds %d", ErrBadCommand, len(rest), MaxPayload)
		}
		c.Payload = rest
	case OpDelete:
		if len(rest) != 0 {
			return Command{}, fmt.Errorf("%w: delete with %d payload bytes", ErrBadCommand, len(rest))
		}
	default:
		return Command{}, fmt.Errorf("%w: op %d", ErrBadCommand, c.Op)
	}
	return c, nil
}

// Status is the outcome of an applied command, carried in sm.Result.Value.
type Status uint64

// Statuses. Their values are part of the result format.
const (
	StatusOK       Status = 1
	StatusConflict Status = 2
	StatusBad      Status = 3
)

// EncodeResult returns the Data of a result: the version, big-endian.
func EncodeResult(version uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, resultBytes), version)
}

// DecodeResult interprets a result's Value and Data.
func DecodeResult(value uint64, data []byte) (Status, uint64, error) {
	st := Status(value)
	switch st {
	case StatusOK, StatusConflict, StatusBad:
	default:
		return 0, 0, fmt.Errorf("shardsm: unknown result status %d", value)
	}
	if len(data) != resultBytes {
		return 0, 0, fmt.Errorf("shardsm: result of %d bytes, want %d", len(data), resultBytes)
	}
	return st, binary.BigEndian.Uint64(data), nil
}
