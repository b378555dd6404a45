package peer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"cairn/blocks"
)

// Mutable blocks over the transport: a node that hosts no replica of a
// mutable block's raft shard forwards Load and CompareAndSet to one that
// does (internal/node's forwarder). The server runs the call with its own
// consensus host (ServerOptions.Mutable): Load is its linearizable read
// (raft ReadIndex), CompareAndSet one raft proposal. It never forwards
// further; a server that does not host the shard answers not-hosted, and
// the caller tries another node.
//
// Wire format (frames and status codes as in the package doc; integers
// big-endian):
//
//	op  request          payload                           reply payload
//	11  Load             id(32)                            status 0: version(8) payload
//	12  CompareAndSet    id(32) want(8) flags(1) payload   status 0: version(8)
//	                                                       status 7: version(8) error text
//
// Load's reply carries the block's version and payload; an absent block is
// version 0 with no payload (decoded as a nil payload). CompareAndSet's
// flags: bit 0 (0x01) deletes the block (the payload must then be empty);
// the other bits must be zero. Its conflict reply (status 7, conflict)
// starts with the block's current version, as blocks.MutableStore returns
// it beside blocks.ErrConflict. Status 9 (not hosted) answers either op
// when the server runs no replica of the block's shard; the client returns
// an error wrapping ErrNotHosted and blocks.ErrUnavailable. Payloads are at
// most MaxMutablePayload bytes; a request over that, a flags byte with
// unknown bits, or a delete with a payload closes the connection as
// malformed.

var _ blocks.MutableStore = (*Client)(nil)

// MaxMutablePayload is the largest mutable block payload the transport
// carries: consensus.MaxPayload (1 MiB), which the node checks is equal.
const MaxMutablePayload = 1 << 20

// ErrNotHosted is wrapped by the errors of Load and CompareAndSet when the
// server hosts no replica of the block's raft shard (the request was not
// run: try another node). A ServerOptions.Mutable returns an error
// wrapping it in that case.
var ErrNotHosted = errors.New("peer: the node hosts no replica of the block's shard")

// ErrNotSent is wrapped by a CompareAndSet error when the request certainly
// did not reach the server (no connection, or it broke before the request
// was out), so its outcome is known: nothing changed.
var ErrNotSent = errors.New("peer: the request was not sent")

// errNotHostedRemote is the sentinel of a not-hosted reply: not hosted,
// and so unavailable there.
var errNotHostedRemote = errors.Join(ErrNotHosted, blocks.ErrUnavailable)

// notSent marks an error of a request that was never sent.
type notSent struct{ err error }

func (e *notSent) Error() string   { return e.err.Error() + " (request not sent)" }
func (e *notSent) Unwrap() []error { return []error{e.err, ErrNotSent} }

// casDelete is the delete bit of a CompareAndSet's flags.
const casDelete = 0x01

// encodeCompareAndSet encodes a CompareAndSet request (nil payload: delete).
func encodeCompareAndSet(id blocks.ID, want blocks.Version, payload []byte) []byte {
	b := make([]byte, 0, 32+8+1)
	b = append(b, id[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(want))
	if payload == nil {
		return append(b, casDelete)
	}
	return append(b, 0)
}

// decodeCompareAndSet decodes a CompareAndSet request. payload aliases p;
// it is nil for a delete and non-nil (maybe empty) otherwise.
func decodeCompareAndSet(p []byte) (id blocks.ID, want blocks.Version, payload []byte, err error) {
	if len(p) < 41 || len(p) > maxCompareAndSet {
		return id, 0, nil, errMalformed("compare-and-set", len(p))
	}
	copy(id[:], p)
	want = blocks.Version(binary.BigEndian.Uint64(p[32:40]))
	switch flags := p[40]; flags {
	case 0:
		return id, want, p[41:len(p):len(p)], nil
	case casDelete:
		if len(p) != 41 {
			return id, 0, nil, errMalformed("compare-and-set delete", len(p))
		}
		return id, want, nil, nil
	default:
		return id, 0, nil, fmt.Errorf("%w: compare-and-set flags %#x", ErrProtocol, flags)
	}
}

// decodeVersioned decodes a Load reply or a conflict reply: a version and
// the rest (aliasing p).
func decodeVersioned(what string, p []byte) (blocks.Version, []byte, error) {
	if len(p) < 8 {
		return 0, nil, errMalformed(what, len(p))
	}
	return blocks.Version(binary.BigEndian.Uint64(p)), p[8:], nil
}

// decodeLoadReply decodes a Load reply (the payload is nil for version 0).
func decodeLoadReply(p []byte) (blocks.Version, []byte, error) {
	v, payload, err := decodeVersioned("load reply", p)
	if err != nil {
		return 0, nil, err
	}
	if len(payload) > MaxMutablePayload {
		return 0, nil, errMalformed("load reply", len(p))
	}
	if v == 0 && len(payload) == 0 {
		payload = nil
	}
	return v, payload, nil
}

// decodeMutable decodes a Load or CompareAndSet request and returns the
// function that serves it with ServerOptions.Mutable.
func (sc *serverConn) decodeMutable(f frame) (func(*serverStream), error) {
	m := sc.s.opts.Mutable
	ctx, id := sc.ctx, f.id
	noMutable := fmt.Errorf("peer: this node serves no mutable blocks: %w", ErrNotHosted)
	switch f.op {
	case opLoad:
		key, err := decodeKey(f.payload)
		if err != nil {
			return nil, err
		}
		return func(*serverStream) {
			if m == nil {
				sc.reply(id, noMutable)
				return
			}
			v, payload, err := m.Load(ctx, blocks.ID(key))
			if err == nil && len(payload) > MaxMutablePayload {
				err = fmt.Errorf("peer: mutable block of %d bytes: %w", len(payload), blocks.ErrTooLarge)
			}
			sc.reply(id, err, binary.BigEndian.AppendUint64(nil, uint64(v)), payload)
		}, nil
	case opCompareAndSet:
		bid, want, payload, err := decodeCompareAndSet(f.payload)
		if err != nil {
			return nil, err
		}
		return func(*serverStream) {
			if m == nil {
				sc.reply(id, noMutable)
				return
			}
			v, err := m.CompareAndSet(ctx, bid, want, payload)
			ver := binary.BigEndian.AppendUint64(nil, uint64(v))
			if err != nil && errorCode(err) == codeConflict {
				msg := err.Error()
				if len(msg) > maxErrorText {
					msg = msg[:maxErrorText]
				}
				_ = sc.w.write(opReply, codeConflict, id, ver, []byte(msg))
				return
			}
			sc.reply(id, err, ver)
		}, nil
	}
	return nil, fmt.Errorf("%w: op %#x is no mutable op", ErrProtocol, f.op)
}

// Load reads mutable block id through the peer's consensus host: a
// linearizable read there (blocks.MutableStore's contract). Errors: one
// wrapping ErrNotHosted (and blocks.ErrUnavailable) when the peer hosts no
// replica of the block's shard; blocks.ErrUnavailable when the peer or its
// shard's quorum did not answer; blocks.ErrClosed after Close. A Load is
// idempotent and retried once on a new connection like the holder calls.
func (c *Client) Load(ctx context.Context, id blocks.ID) (blocks.Version, []byte, error) {
	f, _, err := c.exchange(ctx, opLoad, true, id[:])
	if err != nil {
		return 0, nil, err
	}
	if err := replyError(f); err != nil {
		return 0, nil, c.wrap("load", err)
	}
	v, payload, err := decodeLoadReply(f.payload)
	if err != nil {
		return 0, nil, c.wrap("load", markUnavailable(err))
	}
	return v, payload, nil
}

// CompareAndSet runs blocks.MutableStore's CompareAndSet of id through the
// peer's consensus host (one raft proposal there). A nil payload deletes.
// The request is never sent twice. Errors: blocks.ErrConflict with the
// block's current version; ErrNotHosted (and blocks.ErrUnavailable) when
// the peer hosts no replica of the shard: nothing changed; ErrNotSent (and
// blocks.ErrUnavailable) when the request never left: nothing changed;
// any other blocks.ErrUnavailable leaves the outcome unknown (Load to find
// out); blocks.ErrTooLarge over MaxMutablePayload; blocks.ErrClosed.
func (c *Client) CompareAndSet(ctx context.Context, id blocks.ID, want blocks.Version, payload []byte) (blocks.Version, error) {
	if len(payload) > MaxMutablePayload {
		return 0, c.wrap("compare-and-set", fmt.Errorf("payload of %d bytes, limit %d: %w", len(payload), MaxMutablePayload, blocks.ErrTooLarge))
	}
	f, sent, err := c.exchange(ctx, opCompareAndSet, false, encodeCompareAndSet(id, want, payload), payload)
	if err != nil {
		if !sent {
			return 0, &notSent{err}
		}
		return 0, err
	}
	if f.status == codeConflict {
		v, text, derr := decodeVersioned("conflict reply", f.payload)
		if derr != nil {
			return 0, c.wrap("compare-and-set", markUnavailable(derr))
		}
		return v, c.wrap("compare-and-set", &remoteError{msg: string(text), sentinel: blocks.ErrConflict})
	}
	if err := replyError(f); err != nil {
		return 0, c.wrap("compare-and-set", err)
	}
	v, rest, err := decodeVersioned("compare-and-set reply", f.payload)
	if err == nil && len(rest) != 0 {
		err = errMalformed("compare-and-set reply", len(f.payload))
	}
	if err != nil {
		return 0, c.wrap("compare-and-set", markUnavailable(err))
	}
	return v, nil
}
