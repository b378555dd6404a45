package overlay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/hashicorp/memberlist"
)

// Errors about node descriptions. Test them with errors.Is.
var (
	// ErrMetaTooLarge: a node's encoded description does not fit in
	// memberlist's node metadata ([MaxMetaSize] bytes). Shorten the zone or
	// the addresses.
	ErrMetaTooLarge = errors.New("overlay: node metadata too large")
	// ErrInvalidNode: a node description that cannot be used (empty or
	// malformed ID, negative capacity, control characters in a field).
	ErrInvalidNode = errors.New("overlay: invalid node")
	// ErrBadMeta: node metadata received from a peer could not be decoded.
	ErrBadMeta = errors.New("overlay: bad node metadata")
)

// Limits of a node description.
const (
	// MaxMetaSize is the largest encoded node description: memberlist
	// carries at most this many bytes of metadata per node.
	MaxMetaSize = memberlist.MetaMaxSize
	// MaxIDLen is the longest node ID, in bytes.
	MaxIDLen = 128
	// MaxFieldLen is the longest zone or address, in bytes.
	MaxFieldLen = 255
)

// Node describes one member of the cluster, as every other member sees it.
// It is a plain value: copy it freely.
type Node struct {
	// ID is the node's stable identity, unique in the cluster, and its
	// memberlist name: 1 to MaxIDLen bytes of [A-Za-z0-9._:-]. It never
	// changes for the life of the node's data directory.
	ID string
	// Zone is the failure domain (datacenter, rack); "" is a zone too.
	Zone string
	// RaftAddr is the host:port of the node's consensus (raft) transport.
	RaftAddr string
	// DataAddr is the host:port of the node-to-node data transport (block
	// pieces, journals, repair).
	DataAddr string
	// NBDAddr is the host:port of the node's NBD export ("" if none).
	NBDAddr string
	// Capacity is the node's storage capacity in bytes (>= 0).
	Capacity int64
	// Storage is false for a frontend-only ("hyperscale") node, which holds
	// no blocks and is never picked by placement.
	Storage bool
	// RaftReplicaID is the node's replica ID in every raft shard it joins
	// (0: not yet assigned).
	RaftReplicaID uint64
}

// meta is what a node gossips about itself: its Node plus the flags that
// only the membership layer reads.
type meta struct {
	Node
	leaving bool // set just before a graceful Leave
}

// Node metadata wire format (memberlist's per-node Meta, at most
// MaxMetaSize = 512 bytes), version 1:
//
//	byte     version (1)
//	byte     flags: bit 0 storage, bit 1 leaving; other bits are ignored
//	uvarint  RaftReplicaID
//	uvarint  Capacity (bytes; must fit in int64)
//	5 times  uvarint length + bytes: ID, Zone, RaftAddr, DataAddr, NBDAddr
//	...      anything after these is ignored (room for later fields)
//
// An incompatible change takes a new version byte; a decoder refuses a
// version it does not know. Adding fields at the end keeps version 1, so
// nodes of different releases still understand each other.
const (
	metaVersion1 = 1

	flagStorage = 1 << 0
	flagLeaving = 1 << 1
)

// EncodeMeta returns the memberlist metadata that describes n. Errors wrap
// [ErrInvalidNode] or [ErrMetaTooLarge].
func EncodeMeta(n Node) ([]byte, error) {
	return encodeMeta(meta{Node: n})
}

func encodeMeta(m meta) ([]byte, error) {
	if err := m.Node.validate(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 64)
	b = append(b, metaVersion1)
	var flags byte
	if m.Storage {
		flags |= flagStorage
	}
	if m.leaving {
		flags |= flagLeaving
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, m.RaftReplicaID)
	b = binary.AppendUvarint(b, uint64(m.Capacity))
	for _, s := range []string{m.ID, m.Zone, m.RaftAddr, m.DataAddr, m.NBDAddr} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	if len(b) > MaxMetaSize {
		return nil, fmt.Errorf("%w: node %q encodes to %d bytes, the limit is %d; shorten its zone or addresses",
			ErrMetaTooLarge, m.ID, len(b), MaxMetaSize)
	}
	return b, nil
}

// DecodeMeta decodes node metadata written by [EncodeMeta]. It never
// panics; malformed input returns an error wrapping [ErrBadMeta]. The
// returned Node does not alias b.
func DecodeMeta(b []byte) (Node, error) {
	m, err := decodeMeta(b)
	return m.Node, err
}

func decodeMeta(b []byte) (meta, error) {
	var m meta
	if len(b) > MaxMetaSize {
		return m, fmt.Errorf("%w: %d bytes, more than %d", ErrBadMeta, len(b), MaxMetaSize)
	}
	if len(b) < 2 {
		return m, fmt.Errorf("%w: %d bytes, too short", ErrBadMeta, len(b))
	}
	if b[0] != metaVersion1 {
		return m, fmt.Errorf("%w: unknown version %d (this node knows %d)", ErrBadMeta, b[0], metaVersion1)
	}
	flags := b[1]
	m.Storage = flags&flagStorage != 0
	m.leaving = flags&flagLeaving != 0
	rest := b[2:]
	var err error
	if m.RaftReplicaID, rest, err = uvarint(rest, "raft replica id"); err != nil {
		return m, err
	}
	var c uint64
	if c, rest, err = uvarint(rest, "capacity"); err != nil {
		return m, err
	}
	if c > 1<<63-1 {
		return m, fmt.Errorf("%w: capacity %d overflows int64", ErrBadMeta, c)
	}
	m.Capacity = int64(c)
	for _, f := range []struct {
		name string
		dst  *string
	}{{"id", &m.ID}, {"zone", &m.Zone}, {"raft address", &m.RaftAddr}, {"data address", &m.DataAddr}, {"nbd address", &m.NBDAddr}} {
		var n uint64
		if n, rest, err = uvarint(rest, f.name); err != nil {
			return m, err
		}
		if n > uint64(len(rest)) {
			return m, fmt.Errorf("%w: %s length %d exceeds the %d bytes left", ErrBadMeta, f.name, n, len(rest))
		}
		*f.dst = string(rest[:n])
		rest = rest[n:]
	}
	if err := m.Node.validate(); err != nil {
		return meta{}, fmt.Errorf("%w: %w", ErrBadMeta, err)
	}
	return m, nil
}

func uvarint(b []byte, what string) (uint64, []byte, error) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, b, fmt.Errorf("%w: truncated or overlong %s", ErrBadMeta, what)
	}
	return v, b[n:], nil
}

// Validate reports whether n is a usable node description: a well-formed
// ID, no field longer than its limit or holding control characters, and a
// non-negative capacity. Errors wrap [ErrInvalidNode].
func (n Node) Validate() error { return n.validate() }

func (n Node) validate() error {
	if err := ValidateID(n.ID); err != nil {
		return err
	}
	if n.Capacity < 0 {
		return fmt.Errorf("%w: node %q: negative capacity %d", ErrInvalidNode, n.ID, n.Capacity)
	}
	for _, f := range []struct{ name, v string }{{"zone", n.Zone}, {"raft address", n.RaftAddr}, {"data address", n.DataAddr}, {"nbd address", n.NBDAddr}} {
		if len(f.v) > MaxFieldLen {
			return fmt.Errorf("%w: node %q: %s is %d bytes, the limit is %d", ErrInvalidNode, n.ID, f.name, len(f.v), MaxFieldLen)
		}
		if !utf8.ValidString(f.v) {
			return fmt.Errorf("%w: node %q: %s is not valid UTF-8", ErrInvalidNode, n.ID, f.name)
		}
		for _, r := range f.v {
			if r < 0x20 || r == 0x7f {
				return fmt.Errorf("%w: node %q: %s holds a control character", ErrInvalidNode, n.ID, f.name)
			}
		}
	}
	return nil
}

// ValidateID reports whether id is a well-formed node ID: 1 to [MaxIDLen]
// bytes of letters, digits and ".", "_", ":", "-". Errors wrap
// [ErrInvalidNode].
func ValidateID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty node id", ErrInvalidNode)
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("%w: node id is %d bytes, the limit is %d", ErrInvalidNode, len(id), MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == ':', c == '-':
		default:
			return fmt.Errorf("%w: node id %q: character %q not allowed (use letters, digits, '.', '_', ':', '-')", ErrInvalidNode, id, c)
		}
	}
	return nil
}
