package nbd

import (
	"context"
	"errors"
	"syscall"

	"cairn/blocks"
	"cairn/nbd/proto"
)

// Error kinds the server understands. An [Exports] or [Device]
// implementation returns errors that wrap one of these (or the sentinels of
// package blocks), or the Server's Classify function maps its own errors
// onto them. Everything else is reported to the client as an I/O error.
var (
	// ErrNotFound: no export by that name (NBD_REP_ERR_UNKNOWN).
	ErrNotFound = errors.New("nbd: no such export")
	// ErrDenied: the export exists but may not be opened now, for instance
	// because another writer has it attached (NBD_REP_ERR_POLICY, or
	// NBD_EPERM during transmission).
	ErrDenied = errors.New("nbd: refused by policy")
	// ErrReadOnly: a write to a read-only device (NBD_EPERM).
	ErrReadOnly = errors.New("nbd: read-only")
	// ErrNoSpace: the device has no space left (NBD_ENOSPC).
	ErrNoSpace = errors.New("nbd: no space left")
	// ErrInvalid: an out-of-range or otherwise invalid request
	// (NBD_EINVAL, NBD_REP_ERR_INVALID).
	ErrInvalid = errors.New("nbd: invalid request")
	// ErrUnsupported: the device cannot do this (NBD_ENOTSUP,
	// NBD_REP_ERR_UNSUP).
	ErrUnsupported = errors.New("nbd: not supported")
	// ErrShutdown: the server or device is shutting down (NBD_ESHUTDOWN,
	// NBD_REP_ERR_SHUTDOWN).
	ErrShutdown = errors.New("nbd: shutting down")
	// ErrServerClosed is returned by Serve after Shutdown.
	ErrServerClosed = errors.New("nbd: server closed")
)

// protocolError maps an error from Exports or a Device to the option reply
// type (for the handshake) and the error value (for transmission) the
// client sees. classify, if not nil, is applied first and may translate a
// foreign error (say, volume.ErrAttached) to one of this package's kinds;
// it returns nil for errors it does not know. This is the one place where
// errors become protocol codes; see TestProtocolError.
func protocolError(err error, classify func(error) error) (proto.RepType, proto.Errno) {
	if classify != nil {
		if k := classify(err); k != nil {
			err = k
		}
	}
	switch {
	case errors.Is(err, ErrNotFound):
		return proto.RepErrUnknown, proto.EIO
	case errors.Is(err, ErrDenied):
		return proto.RepErrPolicy, proto.EPERM
	case errors.Is(err, ErrReadOnly):
		return proto.RepErrPolicy, proto.EPERM
	case errors.Is(err, ErrNoSpace), errors.Is(err, blocks.ErrNoSpace), errors.Is(err, syscall.ENOSPC),
		errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG): // spec "Error values": map EDQUOT and EFBIG to ENOSPC
		return proto.RepErrPolicy, proto.ENOSPC
	case errors.Is(err, ErrInvalid):
		return proto.RepErrInvalid, proto.EINVAL
	case errors.Is(err, ErrUnsupported):
		return proto.RepErrUnsup, proto.ENOTSUP
	case errors.Is(err, ErrShutdown), errors.Is(err, ErrServerClosed), errors.Is(err, context.Canceled):
		return proto.RepErrShutdown, proto.ESHUTDOWN
	case errors.Is(err, blocks.ErrCorrupt), errors.Is(err, blocks.ErrUnavailable):
		return proto.RepErrUnknown, proto.EIO
	}
	return proto.RepErrUnknown, proto.EIO
}
