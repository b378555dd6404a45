package proto

import "encoding/binary"

// Transmission wire formats (spec "Request message", "Simple reply
// message", "Structured reply chunk message", "Structured reply types"):
//
//	request        0x25609513(4) flags(2) type(2) cookie(8) offset(8) length(4) [length bytes if WRITE]   28 bytes
//	simple reply   0x67446698(4) error(4) cookie(8) [data if READ and error == 0]                         16 bytes
//	chunk          0x668e33ef(4) flags(2) type(2) cookie(8) length(4) payload(length)                      20 bytes
//	  OFFSET_DATA  offset(8) data(length-8)          length >= 9
//	  OFFSET_HOLE  offset(8) hole-size(4)            length == 12, hole-size != 0
//	  BLOCK_STATUS context-id(4) { length(4) status(4) }+   length == 4 + 8n, n >= 1
//	  ERROR        error(4) message-length(2) message                  length >= 6
//	  ERROR_OFFSET error(4) message-length(2) message offset(8)        length >= 14

// Sizes of fixed-length transmission messages.
const (
	RequestSize          = 28
	SimpleReplySize      = 16
	ChunkHeaderSize      = 20
	OffsetDataHeaderSize = ChunkHeaderSize + 8 // header and offset; data follows
)

// Request is a decoded transmission request header. For CmdWrite, Length
// bytes of data follow it on the wire.
type Request struct {
	Flags  CmdFlags
	Type   Cmd
	Cookie uint64 // opaque; echoed in the reply
	Offset uint64
	Length uint32
}

// End returns Offset+Length and whether that sum did not overflow.
func (r Request) End() (uint64, bool) {
	end := r.Offset + uint64(r.Length)
	return end, end >= r.Offset
}

// AppendRequest appends a request header (for clients and tests); the
// caller appends write data.
func AppendRequest(b []byte, r Request) []byte {
	b = binary.BigEndian.AppendUint32(b, RequestMagic)
	b = binary.BigEndian.AppendUint16(b, uint16(r.Flags))
	b = binary.BigEndian.AppendUint16(b, uint16(r.Type))
	b = binary.BigEndian.AppendUint64(b, r.Cookie)
	b = binary.BigEndian.AppendUint64(b, r.Offset)
	return binary.BigEndian.AppendUint32(b, r.Length)
}

// ParseRequest decodes a 28-byte request header. A bad magic returns
// ErrMagic: the stream is out of sync and the connection must be dropped.
// Command types and flags are not checked here: an unknown command or flag
// deserves an NBD_EINVAL reply, not a disconnect.
func ParseRequest(b []byte) (Request, error) {
	if len(b) != RequestSize {
		return Request{}, malformed("request: %d bytes, want %d", len(b), RequestSize)
	}
	if binary.BigEndian.Uint32(b) != RequestMagic {
		return Request{}, ErrMagic
	}
	return Request{
		Flags:  CmdFlags(binary.BigEndian.Uint16(b[4:])),
		Type:   Cmd(binary.BigEndian.Uint16(b[6:])),
		Cookie: binary.BigEndian.Uint64(b[8:]),
		Offset: binary.BigEndian.Uint64(b[16:]),
		Length: binary.BigEndian.Uint32(b[24:]),
	}, nil
}

// AppendSimpleReply appends a simple reply header; for a successful READ
// the caller sends the data right after it.
func AppendSimpleReply(b []byte, cookie uint64, errno Errno) []byte {
	b = binary.BigEndian.AppendUint32(b, SimpleReplyMagic)
	b = binary.BigEndian.AppendUint32(b, uint32(errno))
	return binary.BigEndian.AppendUint64(b, cookie)
}

// ParseSimpleReply decodes a 16-byte simple reply header (for clients and
// tests).
func ParseSimpleReply(b []byte) (cookie uint64, errno Errno, err error) {
	if len(b) != SimpleReplySize {
		return 0, 0, malformed("simple reply: %d bytes, want %d", len(b), SimpleReplySize)
	}
	if binary.BigEndian.Uint32(b) != SimpleReplyMagic {
		return 0, 0, ErrMagic
	}
	return binary.BigEndian.Uint64(b[8:]), Errno(binary.BigEndian.Uint32(b[4:])), nil
}

// ChunkHeader is the fixed part of a structured reply chunk.
type ChunkHeader struct {
	Flags  uint16
	Type   ReplyType
	Cookie uint64
	Length uint32 // payload bytes that follow
}

// Done reports whether this is the final chunk of its reply.
func (h ChunkHeader) Done() bool { return h.Flags&ReplyFlagDone != 0 }

// AppendChunkHeader appends a structured reply chunk header.
func AppendChunkHeader(b []byte, h ChunkHeader) []byte {
	b = binary.BigEndian.AppendUint32(b, StructuredReplyMagic)
	b = binary.BigEndian.AppendUint16(b, h.Flags)
	b = binary.BigEndian.AppendUint16(b, uint16(h.Type))
	b = binary.BigEndian.AppendUint64(b, h.Cookie)
	return binary.BigEndian.AppendUint32(b, h.Length)
}

// ParseChunkHeader decodes a 20-byte structured reply chunk header (for
// clients and tests).
func ParseChunkHeader(b []byte) (ChunkHeader, error) {
	if len(b) != ChunkHeaderSize {
		return ChunkHeader{}, malformed("chunk header: %d bytes, want %d", len(b), ChunkHeaderSize)
	}
	if binary.BigEndian.Uint32(b) != StructuredReplyMagic {
		return ChunkHeader{}, ErrMagic
	}
	return ChunkHeader{
		Flags:  binary.BigEndian.Uint16(b[4:]),
		Type:   ReplyType(binary.BigEndian.Uint16(b[6:])),
		Cookie: binary.BigEndian.Uint64(b[8:]),
		Length: binary.BigEndian.Uint32(b[16:]),
	}, nil
}

// AppendNone appends an NBD_REPLY_TYPE_NONE chunk, which always carries
// NBD_REPLY_FLAG_DONE and no payload.
func AppendNone(b []byte, cookie uint64) []byte {
	return AppendChunkHeader(b, ChunkHeader{Flags: ReplyFlagDone, Type: ReplyNone, Cookie: cookie})
}

// MaxOffsetData is the most data one OFFSET_DATA chunk can carry: the
// 32-bit length also covers the 8-byte offset.
const MaxOffsetData = 1<<32 - 1 - 8

// AppendOffsetDataHeader appends the header and offset of an
// NBD_REPLY_TYPE_OFFSET_DATA chunk carrying dataLen bytes (1 <= dataLen <=
// MaxOffsetData); the caller sends the data right after it.
func AppendOffsetDataHeader(b []byte, flags uint16, cookie, offset uint64, dataLen int) []byte {
	b = AppendChunkHeader(b, ChunkHeader{Flags: flags, Type: ReplyOffsetData, Cookie: cookie, Length: uint32(8 + dataLen)})
	return binary.BigEndian.AppendUint64(b, offset)
}

// ParseOffsetData decodes the payload of an OFFSET_DATA chunk; data aliases
// payload.
func ParseOffsetData(payload []byte) (offset uint64, data []byte, err error) {
	if len(payload) < 9 {
		return 0, nil, malformed("offset data: %d bytes, want at least 9", len(payload))
	}
	return binary.BigEndian.Uint64(payload), payload[8:], nil
}

// AppendOffsetHole appends a complete NBD_REPLY_TYPE_OFFSET_HOLE chunk.
func AppendOffsetHole(b []byte, flags uint16, cookie, offset uint64, size uint32) []byte {
	b = AppendChunkHeader(b, ChunkHeader{Flags: flags, Type: ReplyOffsetHole, Cookie: cookie, Length: 12})
	b = binary.BigEndian.AppendUint64(b, offset)
	return binary.BigEndian.AppendUint32(b, size)
}

// ParseOffsetHole decodes the payload of an OFFSET_HOLE chunk: exactly 12
// bytes, with a nonzero hole size.
func ParseOffsetHole(payload []byte) (offset uint64, size uint32, err error) {
	if len(payload) != 12 {
		return 0, 0, malformed("offset hole: %d bytes, want 12", len(payload))
	}
	size = binary.BigEndian.Uint32(payload[8:])
	if size == 0 {
		return 0, 0, malformed("offset hole: zero size")
	}
	return binary.BigEndian.Uint64(payload), size, nil
}

// Extent is one block status descriptor.
type Extent struct {
	Length uint32 // nonzero
	Status uint32 // for base:allocation: StateHole, StateZero
}

// AppendBlockStatus appends a complete NBD_REPLY_TYPE_BLOCK_STATUS chunk
// for one metadata context. extents must not be empty.
func AppendBlockStatus(b []byte, flags uint16, cookie uint64, contextID uint32, extents []Extent) []byte {
	b = AppendChunkHeader(b, ChunkHeader{Flags: flags, Type: ReplyBlockStatus, Cookie: cookie, Length: uint32(4 + 8*len(extents))})
	b = binary.BigEndian.AppendUint32(b, contextID)
	for _, e := range extents {
		b = binary.BigEndian.AppendUint32(b, e.Length)
		b = binary.BigEndian.AppendUint32(b, e.Status)
	}
	return b
}

// ParseBlockStatus decodes the payload of a BLOCK_STATUS chunk: a context
// ID and one or more descriptors with nonzero lengths.
func ParseBlockStatus(payload []byte) (contextID uint32, extents []Extent, err error) {
	if len(payload) < 12 || (len(payload)-4)%8 != 0 {
		return 0, nil, malformed("block status: %d bytes, want 4+8n with n >= 1", len(payload))
	}
	r := reader{b: payload, ok: true}
	contextID = r.u32()
	extents = make([]Extent, 0, len(r.b)/8)
	for len(r.b) > 0 {
		e := Extent{Length: r.u32(), Status: r.u32()}
		if e.Length == 0 {
			return 0, nil, malformed("block status: zero-length descriptor")
		}
		extents = append(extents, e)
	}
	return contextID, extents, nil
}

// AppendError appends a complete NBD_REPLY_TYPE_ERROR chunk. errno must be
// nonzero; msg is cut to MaxString bytes.
func AppendError(b []byte, flags uint16, cookie uint64, errno Errno, msg string) []byte {
	msg = cutMessage(msg)
	b = AppendChunkHeader(b, ChunkHeader{Flags: flags, Type: ReplyError, Cookie: cookie, Length: uint32(6 + len(msg))})
	b = binary.BigEndian.AppendUint32(b, uint32(errno))
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	return append(b, msg...)
}

// AppendErrorOffset appends a complete NBD_REPLY_TYPE_ERROR_OFFSET chunk.
func AppendErrorOffset(b []byte, flags uint16, cookie uint64, errno Errno, msg string, offset uint64) []byte {
	msg = cutMessage(msg)
	b = AppendChunkHeader(b, ChunkHeader{Flags: flags, Type: ReplyErrorOffset, Cookie: cookie, Length: uint32(14 + len(msg))})
	b = binary.BigEndian.AppendUint32(b, uint32(errno))
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	b = append(b, msg...)
	return binary.BigEndian.AppendUint64(b, offset)
}

// cutMessage shortens msg to at most MaxString bytes without splitting a
// UTF-8 sequence.
func cutMessage(msg string) string {
	if len(msg) <= MaxString {
		return msg
	}
	cut := MaxString
	for cut > 0 && msg[cut]&0xC0 == 0x80 {
		cut--
	}
	return msg[:cut]
}

// ChunkError is a decoded error chunk.
type ChunkError struct {
	Errno   Errno
	Message string
	Offset  uint64 // ERROR_OFFSET only
}

// ParseErrorChunk decodes the payload of an error chunk of type typ
// (ReplyError or ReplyErrorOffset; any other type with bit 15 set decodes
// like ReplyError with its trailing fields ignored, as the spec asks of
// clients). The error MUST be nonzero and the message must fit.
func ParseErrorChunk(typ ReplyType, payload []byte) (ChunkError, error) {
	r := reader{b: payload, ok: true}
	ce := ChunkError{Errno: Errno(r.u32())}
	n := r.u16()
	ce.Message = string(r.bytes(uint64(n)))
	if !r.ok || ce.Errno == 0 {
		return ChunkError{}, malformed("error chunk: %d bytes", len(payload))
	}
	switch typ {
	case ReplyError:
		if len(r.b) != 0 {
			return ChunkError{}, malformed("error chunk: %d trailing bytes", len(r.b))
		}
	case ReplyErrorOffset:
		ce.Offset = r.u64()
		if !r.ok || len(r.b) != 0 {
			return ChunkError{}, malformed("error offset chunk: %d bytes", len(payload))
		}
	}
	return ce, nil
}
