package volume

import (
	"context"

	"cairn/blocks"
)

// AppendSyncer is an optional capability of a JournalHolder: AppendSync
// is Append followed by Sync in one step, for a holder that can do both
// for the price of one (a remote holder: one network round trip instead
// of two). It returns once record seq is appended and the holder has
// synced, which makes durable the record and everything the holder took
// before it: the pieces put on the same node, and earlier records.
//
// A Flush appends its last record with AppendSync to every journal
// holder that implements it, and then leaves those holders out of its
// sync phase (the store's holders may skip them too, see the cluster's
// sync group), so that a FLUSH at queue depth 1 costs one round trip to
// the store's holders (the pieces) and one to the journal holders.
//
// Errors: Append's and Sync's. On an error nothing is known to be
// durable and the record may or may not have been appended (an Append of
// the same record again is harmless). Safe for concurrent use.
type AppendSyncer interface {
	AppendSync(ctx context.Context, log blocks.ID, epoch blocks.Epoch, seq uint64, rec []byte) error
}
