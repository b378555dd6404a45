package peer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"cairn/blocks"
	"cairn/internal/bloom"
)

// Garbage collection over the transport: a cluster's collector (one node,
// run by `cairn gc`) asks every node to begin a sweep of its silo, gathers
// from every node what its open volumes reference from memory only, reads
// the roots and journals itself, and sends every node a Bloom filter of
// the marked addresses; each node deletes its pieces of blocks the filter
// does not contain that are older than its sweep (internal/node's gc.go
// has the reasoning).
//
// Wire format (frames and status codes as in the package doc; integers
// big-endian):
//
//	op  request     payload                       reply payload
//	18  GCBegin     empty                         sweep(8)
//	19  GCLive      empty                         stream of addresses (32 each), as Walk
//	20  GCSweep     sweep(8) flags(1) filter      stream of progress items, then the result
//
// GCBegin opens a sweep on the node and names it. GCSweep runs it and ends
// it; flags bit 0 (0x01) ends it without deleting anything (the filter
// must then be empty); other bits must be zero. A GCSweep's filter is a
// bloom.Filter in its wire format (at most MaxFilterBits bits), checked by
// the server, which answers a bad one with status 8. A sweep's stream
// sends a progress item, checked(8) swept(8), about every second, so that
// a long sweep keeps its stream alive (each batch re-arms the client's
// timeout; each batch holds one item); the final reply carries checked(8)
// swept(8) diskBefore(8) diskAfter(8): pieces looked at and deleted, and
// the silo's bytes on disk before and after (compacted). A server without a Collector answers
// every one with status 8.

// MaxFilterBits bounds the filter a GCSweep carries: 2^29 bits (64 MiB),
// about 0.05% false positives for 32 million marked blocks, and fewer
// bits per block above that (more garbage kept, none lost).
const MaxFilterBits = 1 << 29

// maxGCSweep is a GCSweep request's largest payload.
const maxGCSweep = 8 + 1 + 21 + MaxFilterBits/8

// gcAbort is the flag of a GCSweep that only ends the sweep.
const gcAbort = 0x01

// progressEvery is how often a sweep's stream reports progress.
const progressEvery = time.Second

// The sizes of a sweep's progress item (one per batch) and final result.
const (
	progressSize = 16
	resultSize   = 32
)

// SweepResult is the outcome of a sweep on one node.
type SweepResult struct {
	Checked, Swept        int64 // pieces looked at, and deleted
	DiskBefore, DiskAfter int64 // the silo's bytes on disk
}

// Collector serves the garbage-collection requests of a cluster's
// collector (ServerOptions.Collector).
type Collector interface {
	// BeginSweep opens a sweep of the local silo and returns its ID.
	BeginSweep(ctx context.Context) (uint64, error)
	// LiveRefs calls mark for every block the node's open volumes
	// reference from memory only (volume.Catalogue.LiveRefs).
	LiveRefs(ctx context.Context, mark func(blocks.Addr) error) error
	// Sweep runs sweep id with filter and ends it, or, with filter nil,
	// only ends it. It calls progress now and then.
	Sweep(ctx context.Context, id uint64, filter *bloom.Filter, progress func(checked, swept int64) error) (SweepResult, error)
}

func encodeGCSweep(id uint64, filter []byte) []byte {
	b := make([]byte, 9, 9+len(filter))
	binary.BigEndian.PutUint64(b, id)
	if filter == nil {
		b[8] = gcAbort
	}
	return append(b, filter...)
}

// decodeGCSweep decodes a GCSweep request: a nil filter ends the sweep.
// A filter that does not decode is malformed only as a filter (the
// request's framing is sound): its error wraps bloom.ErrMalformed.
func decodeGCSweep(p []byte) (id uint64, filter []byte, abort bool, err error) {
	if len(p) < 9 || len(p) > maxGCSweep {
		return 0, nil, false, errMalformed("gc-sweep", len(p))
	}
	id = binary.BigEndian.Uint64(p)
	switch p[8] {
	case 0:
		return id, p[9:], false, nil
	case gcAbort:
		if len(p) != 9 {
			return 0, nil, false, errMalformed("gc-sweep abort", len(p))
		}
		return id, nil, true, nil
	}
	return 0, nil, false, fmt.Errorf("%w: gc-sweep flags %#x", ErrProtocol, p[8])
}

func appendProgress(b []byte, checked, swept int64) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(checked))
	return binary.BigEndian.AppendUint64(b, uint64(swept))
}

func encodeSweepResult(r SweepResult) []byte {
	b := appendProgress(nil, r.Checked, r.Swept)
	b = binary.BigEndian.AppendUint64(b, uint64(r.DiskBefore))
	return binary.BigEndian.AppendUint64(b, uint64(r.DiskAfter))
}

func decodeSweepResult(p []byte) (SweepResult, error) {
	if len(p) != resultSize {
		return SweepResult{}, errMalformed("gc-sweep reply", len(p))
	}
	u := func(i int) int64 { return int64(binary.BigEndian.Uint64(p[8*i:])) }
	return SweepResult{Checked: u(0), Swept: u(1), DiskBefore: u(2), DiskAfter: u(3)}, nil
}

// isStream reports whether op's reply is a stream.
func isStream(op byte) bool {
	return op == opWalk || op == opReplay || op == opGCLive || op == opGCSweep
}

// decodeGC decodes a GCBegin, GCLive or GCSweep request.
func (sc *serverConn) decodeGC(f frame) (func(st *serverStream), error) {
	col := sc.s.opts.Collector
	ctx, id := sc.ctx, f.id
	noCollector := func(st *serverStream) {
		err := fmt.Errorf("peer: this node serves no garbage collection: %w", ErrProtocol)
		if st != nil {
			st.run(func(context.Context) error { return err })
			return
		}
		sc.reply(id, err)
	}
	switch f.op {
	case opGCBegin:
		if len(f.payload) != 0 {
			return nil, errMalformed("gc-begin", len(f.payload))
		}
		if col == nil {
			return noCollector, nil
		}
		return func(*serverStream) {
			sw, err := col.BeginSweep(ctx)
			sc.reply(id, err, binary.BigEndian.AppendUint64(nil, sw))
		}, nil
	case opGCLive:
		if len(f.payload) != 0 {
			return nil, errMalformed("gc-live", len(f.payload))
		}
		if col == nil {
			return noCollector, nil
		}
		return func(st *serverStream) {
			st.run(func(ctx context.Context) error {
				return col.LiveRefs(ctx, func(a blocks.Addr) error {
					return st.add(append(st.batch, a[:]...))
				})
			})
		}, nil
	case opGCSweep:
		sw, raw, abort, err := decodeGCSweep(f.payload)
		if err != nil {
			return nil, err
		}
		if col == nil {
			return noCollector, nil
		}
		return func(st *serverStream) {
			var res SweepResult
			st.run(func(ctx context.Context) error {
				var filter *bloom.Filter
				if !abort {
					var err error
					if filter, err = bloom.Decode(raw); err != nil {
						// Nothing is swept: end the sweep and refuse.
						_, _ = col.Sweep(ctx, sw, nil, nil)
						return fmt.Errorf("peer: gc-sweep: %w: %w", err, ErrProtocol)
					}
				}
				last := time.Now()
				var err error
				res, err = col.Sweep(ctx, sw, filter, func(checked, swept int64) error {
					if time.Since(last) < progressEvery {
						return nil
					}
					last = time.Now()
					// Sent at once: a progress item is a heartbeat.
					st.batch = appendProgress(st.batch, checked, swept)
					return st.flush()
				})
				if err == nil {
					st.batch = append(st.batch[:0], encodeSweepResult(res)...)
				}
				return err
			})
		}, nil
	}
	return nil, fmt.Errorf("%w: op %#x is not a gc op", ErrProtocol, f.op)
}

// GCBegin asks the peer to begin a sweep of its silo and returns its ID.
func (c *Client) GCBegin(ctx context.Context) (uint64, error) {
	p, err := c.call(ctx, opGCBegin)
	if err != nil {
		return 0, err
	}
	if len(p) != 8 {
		return 0, c.wrap("gc-begin", markUnavailable(errMalformed("gc-begin reply", len(p))))
	}
	return binary.BigEndian.Uint64(p), nil
}

// GCLive calls mark for every block the peer's open volumes reference
// from memory only.
func (c *Client) GCLive(ctx context.Context, mark func(blocks.Addr) error) error {
	return c.stream(ctx, opGCLive, nil, func(p []byte) error {
		err := decodeWalkBatch(p, mark)
		if errors.Is(err, ErrProtocol) {
			return c.wrap("gc-live", markUnavailable(err))
		}
		return err
	})
}

// GCSweep runs sweep id on the peer with filter (an encoded bloom.Filter)
// and ends it; with filter nil it only ends it.
func (c *Client) GCSweep(ctx context.Context, id uint64, filter []byte) (SweepResult, error) {
	if filter != nil && len(filter) > maxGCSweep-9 {
		return SweepResult{}, c.wrap("gc-sweep", fmt.Errorf("filter of %d bytes: %w", len(filter), blocks.ErrTooLarge))
	}
	var res SweepResult
	err := c.stream(ctx, opGCSweep, encodeGCSweep(id, filter), func(p []byte) error {
		switch len(p) {
		case progressSize:
			return nil
		case resultSize:
			res, _ = decodeSweepResult(p)
			return nil
		}
		return c.wrap("gc-sweep", markUnavailable(errMalformed("gc-sweep reply", len(p))))
	})
	return res, err
}
