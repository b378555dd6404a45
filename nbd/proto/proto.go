// Package proto encodes and decodes the messages of the NBD protocol
// (NetworkBlockDevice/nbd doc/proto.md): the fixed newstyle handshake, option
// requests and replies, NBD_REP_INFO items, metadata-context negotiation,
// the 28-byte request header, simple replies and structured reply chunks.
//
// It does no I/O: every function works on byte slices. Decoders never panic
// on any input and return an error wrapping [ErrMalformed] (or [ErrMagic])
// when the bytes do not follow the wire format. Encoders follow the append
// convention (AppendX(b, ...) returns b with the message appended), so a
// caller can build a reply in a reused buffer.
//
// All integers on the wire are big-endian ("network byte order", spec
// "Conventions").
package proto

import (
	"errors"
	"fmt"
)

// Errors returned by the decoders.
var (
	// ErrMalformed: the bytes do not follow the wire format (too short, a
	// length field that points past the end, trailing bytes, a string too
	// long).
	ErrMalformed = errors.New("nbd/proto: malformed message")
	// ErrMagic: a message did not start with the magic number its type
	// requires. The stream is out of sync; the peer should be disconnected.
	ErrMagic = errors.New("nbd/proto: bad magic")
)

// Magic numbers (spec "Newstyle negotiation", "Fixed newstyle negotiation",
// "Request message", "Simple reply message", "Structured reply chunk
// message").
const (
	// NBDMagic is the first 8 bytes the server sends: ASCII "NBDMAGIC".
	NBDMagic uint64 = 0x4e42444d41474943
	// IHaveOpt follows NBDMagic in newstyle negotiation and starts every
	// option request: ASCII "IHAVEOPT".
	IHaveOpt uint64 = 0x49484156454F5054
	// OptReplyMagic starts every option reply in fixed newstyle.
	OptReplyMagic uint64 = 0x3e889045565a9
	// RequestMagic starts every transmission request.
	RequestMagic uint32 = 0x25609513
	// SimpleReplyMagic starts every simple reply.
	SimpleReplyMagic uint32 = 0x67446698
	// StructuredReplyMagic starts every structured reply chunk.
	StructuredReplyMagic uint32 = 0x668e33ef
)

// MaxString is the longest string (export name, description, context name,
// error message) the spec allows ("Conventions": MUST be no longer than
// 4096 bytes).
const MaxString = 4096

// Handshake flags, sent by the server after IHAVEOPT (spec "Handshake
// flags").
const (
	FlagFixedNewstyle uint16 = 1 << 0
	FlagNoZeroes      uint16 = 1 << 1
)

// Client flags, sent by the client in reply to the handshake flags (spec
// "Client flags").
const (
	ClientFlagFixedNewstyle uint32 = 1 << 0
	ClientFlagNoZeroes      uint32 = 1 << 1
)

// TransmissionFlags describe an export's capabilities (spec "Transmission
// flags").
type TransmissionFlags uint16

// Transmission flags.
const (
	FlagHasFlags        TransmissionFlags = 1 << 0
	FlagReadOnly        TransmissionFlags = 1 << 1
	FlagSendFlush       TransmissionFlags = 1 << 2
	FlagSendFUA         TransmissionFlags = 1 << 3
	FlagRotational      TransmissionFlags = 1 << 4
	FlagSendTrim        TransmissionFlags = 1 << 5
	FlagSendWriteZeroes TransmissionFlags = 1 << 6
	FlagSendDF          TransmissionFlags = 1 << 7
	FlagCanMultiConn    TransmissionFlags = 1 << 8
	FlagSendResize      TransmissionFlags = 1 << 9
	FlagSendCache       TransmissionFlags = 1 << 10
	FlagSendFastZero    TransmissionFlags = 1 << 11
)

// Option is an option type in option haggling (spec "Option types").
type Option uint32

// Option types.
const (
	OptExportName      Option = 1
	OptAbort           Option = 2
	OptList            Option = 3
	OptPeekExport      Option = 4
	OptStartTLS        Option = 5
	OptInfo            Option = 6
	OptGo              Option = 7
	OptStructuredReply Option = 8
	OptListMetaContext Option = 9
	OptSetMetaContext  Option = 10
	OptExtendedHeaders Option = 11
)

var optionNames = map[Option]string{
	OptExportName: "EXPORT_NAME", OptAbort: "ABORT", OptList: "LIST",
	OptPeekExport: "PEEK_EXPORT", OptStartTLS: "STARTTLS", OptInfo: "INFO",
	OptGo: "GO", OptStructuredReply: "STRUCTURED_REPLY",
	OptListMetaContext: "LIST_META_CONTEXT", OptSetMetaContext: "SET_META_CONTEXT",
	OptExtendedHeaders: "EXTENDED_HEADERS",
}

func (o Option) String() string {
	if s, ok := optionNames[o]; ok {
		return "NBD_OPT_" + s
	}
	return fmt.Sprintf("NBD_OPT(%d)", uint32(o))
}

// RepType is an option reply type (spec "Option reply types"). Error types
// have bit 31 set.
type RepType uint32

// Option reply types.
const (
	RepAck         RepType = 1
	RepServer      RepType = 2
	RepInfo        RepType = 3
	RepMetaContext RepType = 4

	RepErrUnsup         RepType = 1<<31 + 1
	RepErrPolicy        RepType = 1<<31 + 2
	RepErrInvalid       RepType = 1<<31 + 3
	RepErrPlatform      RepType = 1<<31 + 4
	RepErrTLSReqd       RepType = 1<<31 + 5
	RepErrUnknown       RepType = 1<<31 + 6
	RepErrShutdown      RepType = 1<<31 + 7
	RepErrBlockSizeReqd RepType = 1<<31 + 8
	RepErrTooBig        RepType = 1<<31 + 9
	RepErrExtHeaderReqd RepType = 1<<31 + 10

	repErrorBit RepType = 1 << 31
)

// IsError reports whether t is an error reply (bit 31 set).
func (t RepType) IsError() bool { return t&repErrorBit != 0 }

func (t RepType) String() string {
	switch t {
	case RepAck:
		return "NBD_REP_ACK"
	case RepServer:
		return "NBD_REP_SERVER"
	case RepInfo:
		return "NBD_REP_INFO"
	case RepMetaContext:
		return "NBD_REP_META_CONTEXT"
	case RepErrUnsup:
		return "NBD_REP_ERR_UNSUP"
	case RepErrPolicy:
		return "NBD_REP_ERR_POLICY"
	case RepErrInvalid:
		return "NBD_REP_ERR_INVALID"
	case RepErrPlatform:
		return "NBD_REP_ERR_PLATFORM"
	case RepErrTLSReqd:
		return "NBD_REP_ERR_TLS_REQD"
	case RepErrUnknown:
		return "NBD_REP_ERR_UNKNOWN"
	case RepErrShutdown:
		return "NBD_REP_ERR_SHUTDOWN"
	case RepErrBlockSizeReqd:
		return "NBD_REP_ERR_BLOCK_SIZE_REQD"
	case RepErrTooBig:
		return "NBD_REP_ERR_TOO_BIG"
	case RepErrExtHeaderReqd:
		return "NBD_REP_ERR_EXT_HEADER_REQD"
	}
	return fmt.Sprintf("NBD_REP(%#x)", uint32(t))
}

// InfoType is the type of an NBD_REP_INFO item (spec "Option reply types",
// NBD_REP_INFO).
type InfoType uint16

// Information types.
const (
	InfoExport      InfoType = 0
	InfoName        InfoType = 1
	InfoDescription InfoType = 2
	InfoBlockSize   InfoType = 3
)

// Cmd is a transmission request type (spec "Request types").
type Cmd uint16

// Request types.
const (
	CmdRead        Cmd = 0
	CmdWrite       Cmd = 1
	CmdDisc        Cmd = 2
	CmdFlush       Cmd = 3
	CmdTrim        Cmd = 4
	CmdCache       Cmd = 5
	CmdWriteZeroes Cmd = 6
	CmdBlockStatus Cmd = 7
	CmdResize      Cmd = 8
)

var cmdNames = [...]string{"READ", "WRITE", "DISC", "FLUSH", "TRIM", "CACHE", "WRITE_ZEROES", "BLOCK_STATUS", "RESIZE"}

func (c Cmd) String() string {
	if int(c) < len(cmdNames) {
		return "NBD_CMD_" + cmdNames[c]
	}
	return fmt.Sprintf("NBD_CMD(%d)", uint16(c))
}

// CmdFlags are a request's command flags (spec "Command flags").
type CmdFlags uint16

// Command flags.
const (
	CmdFlagFUA        CmdFlags = 1 << 0
	CmdFlagNoHole     CmdFlags = 1 << 1
	CmdFlagDF         CmdFlags = 1 << 2
	CmdFlagReqOne     CmdFlags = 1 << 3
	CmdFlagFastZero   CmdFlags = 1 << 4
	CmdFlagPayloadLen CmdFlags = 1 << 5
)

// ReplyFlagDone marks the final chunk of a structured reply (spec
// "Structured reply flags").
const ReplyFlagDone uint16 = 1 << 0

// ReplyType is a structured reply chunk type (spec "Structured reply
// types"). Error types have bit 15 set.
type ReplyType uint16

// Structured reply types.
const (
	ReplyNone        ReplyType = 0
	ReplyOffsetData  ReplyType = 1
	ReplyOffsetHole  ReplyType = 2
	ReplyBlockStatus ReplyType = 5
	ReplyError       ReplyType = 1<<15 + 1
	ReplyErrorOffset ReplyType = 1<<15 + 2
)

// IsError reports whether t is an error chunk type (bit 15 set).
func (t ReplyType) IsError() bool { return t&(1<<15) != 0 }

// Errno is an NBD error value, carried in simple replies and error chunks
// (spec "Error values").
type Errno uint32

// Error values.
const (
	EPERM     Errno = 1
	EIO       Errno = 5
	ENOMEM    Errno = 12
	EINVAL    Errno = 22
	ENOSPC    Errno = 28
	EOVERFLOW Errno = 75
	ENOTSUP   Errno = 95
	ESHUTDOWN Errno = 108
)

func (e Errno) String() string {
	switch e {
	case 0:
		return "OK"
	case EPERM:
		return "NBD_EPERM"
	case EIO:
		return "NBD_EIO"
	case ENOMEM:
		return "NBD_ENOMEM"
	case EINVAL:
		return "NBD_EINVAL"
	case ENOSPC:
		return "NBD_ENOSPC"
	case EOVERFLOW:
		return "NBD_EOVERFLOW"
	case ENOTSUP:
		return "NBD_ENOTSUP"
	case ESHUTDOWN:
		return "NBD_ESHUTDOWN"
	}
	return fmt.Sprintf("NBD_E(%d)", uint32(e))
}

// Block status flags of the base:allocation context (spec
// "base:allocation metadata context").
const (
	StateHole uint32 = 1 << 0
	StateZero uint32 = 1 << 1
)

// ContextBaseAllocation is the one metadata context the spec defines.
const ContextBaseAllocation = "base:allocation"

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}
