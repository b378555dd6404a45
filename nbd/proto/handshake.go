package proto

import (
	"encoding/binary"
	"unicode/utf8"
)

// Handshake wire formats (spec "Newstyle negotiation", "Fixed newstyle
// negotiation", "Option types", "Option reply types"):
//
//	server greeting  NBDMAGIC(8) IHAVEOPT(8) handshake-flags(2)          = 18 bytes
//	client flags     flags(4)
//	option request   IHAVEOPT(8) option(4) length(4) data(length)        header 16 bytes
//	option reply     0x3e889045565a9(8) option(4) type(4) length(4) data header 20 bytes
//	EXPORT_NAME ok   size(8) transmission-flags(2) [124 zero bytes unless NO_ZEROES]

// Sizes of fixed-length handshake messages.
const (
	GreetingSize          = 18
	ClientFlagsSize       = 4
	OptionHeaderSize      = 16
	OptionReplyHeaderSize = 20
	ExportNameReplySize   = 10  // without the zero padding
	ExportNamePadding     = 124 // zero bytes sent unless NO_ZEROES was negotiated
)

// AppendGreeting appends the server's newstyle greeting with the given
// handshake flags.
func AppendGreeting(b []byte, flags uint16) []byte {
	b = binary.BigEndian.AppendUint64(b, NBDMagic)
	b = binary.BigEndian.AppendUint64(b, IHaveOpt)
	return binary.BigEndian.AppendUint16(b, flags)
}

// ParseGreeting decodes the server greeting (for clients and tests).
func ParseGreeting(b []byte) (flags uint16, err error) {
	if len(b) != GreetingSize {
		return 0, malformed("greeting: %d bytes, want %d", len(b), GreetingSize)
	}
	if binary.BigEndian.Uint64(b) != NBDMagic || binary.BigEndian.Uint64(b[8:]) != IHaveOpt {
		return 0, ErrMagic
	}
	return binary.BigEndian.Uint16(b[16:]), nil
}

// ParseClientFlags decodes the client's 32-bit flags and checks them
// against the handshake flags the server offered: the server MUST drop the
// connection if the client sets an unknown flag or one the server did not
// advertise (spec "Client flags").
func ParseClientFlags(b []byte, offered uint16) (uint32, error) {
	if len(b) != ClientFlagsSize {
		return 0, malformed("client flags: %d bytes, want %d", len(b), ClientFlagsSize)
	}
	f := binary.BigEndian.Uint32(b)
	allowed := ClientFlagFixedNewstyle
	if offered&FlagNoZeroes != 0 {
		allowed |= ClientFlagNoZeroes
	}
	if f&^allowed != 0 {
		return f, malformed("client flags %#x: unknown or not offered", f)
	}
	return f, nil
}

// OptionHeader is the fixed part of an option request.
type OptionHeader struct {
	Option Option
	Length uint32 // bytes of option data that follow
}

// AppendOptionRequest appends an option request with its data (for clients
// and tests).
func AppendOptionRequest(b []byte, opt Option, data []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, IHaveOpt)
	b = binary.BigEndian.AppendUint32(b, uint32(opt))
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// ParseOptionHeader decodes the 16-byte option request header. A bad magic
// returns ErrMagic: the stream is out of sync.
func ParseOptionHeader(b []byte) (OptionHeader, error) {
	if len(b) != OptionHeaderSize {
		return OptionHeader{}, malformed("option header: %d bytes, want %d", len(b), OptionHeaderSize)
	}
	if binary.BigEndian.Uint64(b) != IHaveOpt {
		return OptionHeader{}, ErrMagic
	}
	return OptionHeader{
		Option: Option(binary.BigEndian.Uint32(b[8:])),
		Length: binary.BigEndian.Uint32(b[12:]),
	}, nil
}

// AppendOptionReply appends an option reply of type typ to option opt with
// data as its payload.
func AppendOptionReply(b []byte, opt Option, typ RepType, data []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, OptReplyMagic)
	b = binary.BigEndian.AppendUint32(b, uint32(opt))
	b = binary.BigEndian.AppendUint32(b, uint32(typ))
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// OptionReplyHeader is the fixed part of an option reply.
type OptionReplyHeader struct {
	Option Option
	Type   RepType
	Length uint32
}

// ParseOptionReplyHeader decodes the 20-byte option reply header (for
// clients and tests).
func ParseOptionReplyHeader(b []byte) (OptionReplyHeader, error) {
	if len(b) != OptionReplyHeaderSize {
		return OptionReplyHeader{}, malformed("option reply header: %d bytes, want %d", len(b), OptionReplyHeaderSize)
	}
	if binary.BigEndian.Uint64(b) != OptReplyMagic {
		return OptionReplyHeader{}, ErrMagic
	}
	return OptionReplyHeader{
		Option: Option(binary.BigEndian.Uint32(b[8:])),
		Type:   RepType(binary.BigEndian.Uint32(b[12:])),
		Length: binary.BigEndian.Uint32(b[16:]),
	}, nil
}

// AppendExportNameReply appends the server's answer to a successful
// NBD_OPT_EXPORT_NAME: the export size, its transmission flags and, unless
// the client negotiated NO_ZEROES, 124 zero bytes.
func AppendExportNameReply(b []byte, size uint64, flags TransmissionFlags, noZeroes bool) []byte {
	b = binary.BigEndian.AppendUint64(b, size)
	b = binary.BigEndian.AppendUint16(b, uint16(flags))
	if !noZeroes {
		b = append(b, make([]byte, ExportNamePadding)...)
	}
	return b
}

// ValidString reports whether s may be sent as an NBD string: valid UTF-8,
// no NUL, at most MaxString bytes (spec "Conventions").
func ValidString(s string) bool {
	if len(s) > MaxString || !utf8.ValidString(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return false
		}
	}
	return true
}

// reader walks a byte slice for the decoders; once it fails every later
// read fails too, so decoders check ok once at the end.
type reader struct {
	b  []byte
	ok bool
}

func (r *reader) u16() uint16 {
	if len(r.b) < 2 {
		r.ok = false
		r.b = nil
		return 0
	}
	v := binary.BigEndian.Uint16(r.b)
	r.b = r.b[2:]
	return v
}

func (r *reader) u32() uint32 {
	if len(r.b) < 4 {
		r.ok = false
		r.b = nil
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) u64() uint64 {
	if len(r.b) < 8 {
		r.ok = false
		r.b = nil
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) bytes(n uint64) []byte {
	if uint64(len(r.b)) < n {
		r.ok = false
		r.b = nil
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

// str reads a string of n bytes and checks it against the string rules.
func (r *reader) str(n uint64) string {
	if n > MaxString {
		r.ok = false
		r.b = nil
		return ""
	}
	s := string(r.bytes(n))
	if r.ok && !ValidString(s) {
		r.ok = false
	}
	return s
}

// InfoRequest is the data of NBD_OPT_INFO and NBD_OPT_GO (spec "Option
// types", NBD_OPT_INFO):
//
//	name-length(4) name(name-length) count(2) info-type(2)*count
type InfoRequest struct {
	Name     string     // empty means the default export
	Requests []InfoType // information the client asks for
}

// Wants reports whether the client asked for information type t.
func (q InfoRequest) Wants(t InfoType) bool {
	for _, r := range q.Requests {
		if r == t {
			return true
		}
	}
	return false
}

// AppendInfoRequest appends the data of an NBD_OPT_INFO or NBD_OPT_GO.
func AppendInfoRequest(b []byte, q InfoRequest) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(q.Name)))
	b = append(b, q.Name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(q.Requests)))
	for _, t := range q.Requests {
		b = binary.BigEndian.AppendUint16(b, uint16(t))
	}
	return b
}

// ParseInfoRequest decodes the data of NBD_OPT_INFO or NBD_OPT_GO. The
// name length MUST be no larger than the data length - 6, and the request
// list must fill the rest exactly.
func ParseInfoRequest(data []byte) (InfoRequest, error) {
	r := reader{b: data, ok: true}
	n := r.u32()
	if !r.ok || uint64(n)+2 > uint64(len(r.b)) {
		return InfoRequest{}, malformed("info request: name length %d in %d bytes", n, len(data))
	}
	name := r.str(uint64(n))
	count := r.u16()
	if !r.ok || len(r.b) != 2*int(count) {
		return InfoRequest{}, malformed("info request: bad name or %d requests in %d bytes", count, len(r.b))
	}
	q := InfoRequest{Name: name}
	if count > 0 {
		q.Requests = make([]InfoType, count)
		for i := range q.Requests {
			q.Requests[i] = InfoType(r.u16())
		}
	}
	return q, nil
}

// AppendInfoExport appends an NBD_INFO_EXPORT item (the payload of an
// NBD_REP_INFO reply): type(2) size(8) transmission-flags(2).
func AppendInfoExport(b []byte, size uint64, flags TransmissionFlags) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(InfoExport))
	b = binary.BigEndian.AppendUint64(b, size)
	return binary.BigEndian.AppendUint16(b, uint16(flags))
}

// AppendInfoName appends an NBD_INFO_NAME item: type(2) name.
func AppendInfoName(b []byte, name string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(InfoName))
	return append(b, name...)
}

// AppendInfoDescription appends an NBD_INFO_DESCRIPTION item: type(2)
// description.
func AppendInfoDescription(b []byte, desc string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(InfoDescription))
	return append(b, desc...)
}

// BlockSize holds the size constraints of NBD_INFO_BLOCK_SIZE (spec "Size
// constraints").
type BlockSize struct {
	Minimum, Preferred, Maximum uint32
}

// Valid reports whether the constraints obey the spec: minimum a power of
// two no larger than 64 KiB; preferred a power of two at least
// max(minimum, 512); maximum at least preferred.
func (bs BlockSize) Valid() bool {
	pow2 := func(v uint32) bool { return v != 0 && v&(v-1) == 0 }
	return pow2(bs.Minimum) && bs.Minimum <= 1<<16 &&
		pow2(bs.Preferred) && bs.Preferred >= max(bs.Minimum, 512) &&
		bs.Maximum >= bs.Preferred
}

// AppendInfoBlockSize appends an NBD_INFO_BLOCK_SIZE item: type(2)
// minimum(4) preferred(4) maximum(4).
func AppendInfoBlockSize(b []byte, bs BlockSize) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(InfoBlockSize))
	b = binary.BigEndian.AppendUint32(b, bs.Minimum)
	b = binary.BigEndian.AppendUint32(b, bs.Preferred)
	return binary.BigEndian.AppendUint32(b, bs.Maximum)
}

// Info is a decoded NBD_REP_INFO item (for clients and tests). Only the
// fields of its Type are set.
type Info struct {
	Type        InfoType
	Size        uint64            // InfoExport
	Flags       TransmissionFlags // InfoExport
	Name        string            // InfoName
	Description string            // InfoDescription
	BlockSize   BlockSize         // InfoBlockSize
}

// ParseInfo decodes the payload of an NBD_REP_INFO reply. Unknown types
// decode with only Type set (clients MUST ignore them).
func ParseInfo(data []byte) (Info, error) {
	r := reader{b: data, ok: true}
	inf := Info{Type: InfoType(r.u16())}
	if !r.ok {
		return Info{}, malformed("info: %d bytes", len(data))
	}
	switch inf.Type {
	case InfoExport:
		inf.Size = r.u64()
		inf.Flags = TransmissionFlags(r.u16())
	case InfoName:
		inf.Name = r.str(uint64(len(r.b)))
	case InfoDescription:
		inf.Description = r.str(uint64(len(r.b)))
	case InfoBlockSize:
		inf.BlockSize = BlockSize{r.u32(), r.u32(), r.u32()}
	default:
		return inf, nil
	}
	if !r.ok || len(r.b) != 0 {
		return Info{}, malformed("info type %d: %d bytes", inf.Type, len(data))
	}
	return inf, nil
}

// AppendServer appends the payload of an NBD_REP_SERVER reply:
// name-length(4) name description.
func AppendServer(b []byte, name, desc string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(name)))
	b = append(b, name...)
	return append(b, desc...)
}

// ParseServer decodes the payload of an NBD_REP_SERVER reply: the name
// length MUST be no larger than the payload length - 4, and the rest is a
// description for humans.
func ParseServer(data []byte) (name, desc string, err error) {
	r := reader{b: data, ok: true}
	n := r.u32()
	name = r.str(uint64(n))
	desc = r.str(uint64(len(r.b)))
	if !r.ok {
		return "", "", malformed("server reply: name length %d in %d bytes", n, len(data))
	}
	return name, desc, nil
}

// MetaContextRequest is the data of NBD_OPT_LIST_META_CONTEXT and
// NBD_OPT_SET_META_CONTEXT (spec "Option types"):
//
//	export-name-length(4) export-name count(4) { query-length(4) query }*count
type MetaContextRequest struct {
	Export  string
	Queries []string
}

// AppendMetaContextRequest appends the data of a meta context option.
func AppendMetaContextRequest(b []byte, q MetaContextRequest) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(q.Export)))
	b = append(b, q.Export...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(q.Queries)))
	for _, s := range q.Queries {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	return b
}

// ParseMetaContextRequest decodes the data of a meta context option. A
// query length that reaches past the data is malformed (the server MUST
// then reply NBD_REP_ERR_INVALID); so are trailing bytes.
func ParseMetaContextRequest(data []byte) (MetaContextRequest, error) {
	r := reader{b: data, ok: true}
	n := r.u32()
	q := MetaContextRequest{Export: r.str(uint64(n))}
	count := r.u32()
	if !r.ok || uint64(count)*4 > uint64(len(r.b)) {
		return MetaContextRequest{}, malformed("meta context request: %d bytes", len(data))
	}
	if count > 0 {
		q.Queries = make([]string, 0, count)
	}
	for range count {
		l := r.u32()
		q.Queries = append(q.Queries, r.str(uint64(l)))
		if !r.ok {
			return MetaContextRequest{}, malformed("meta context request: query %d does not fit", len(q.Queries))
		}
	}
	if len(r.b) != 0 {
		return MetaContextRequest{}, malformed("meta context request: %d trailing bytes", len(r.b))
	}
	return q, nil
}

// AppendMetaContext appends the payload of an NBD_REP_META_CONTEXT reply:
// context-id(4) name.
func AppendMetaContext(b []byte, id uint32, name string) []byte {
	b = binary.BigEndian.AppendUint32(b, id)
	return append(b, name...)
}

// ParseMetaContext decodes the payload of an NBD_REP_META_CONTEXT reply.
func ParseMetaContext(data []byte) (id uint32, name string, err error) {
	r := reader{b: data, ok: true}
	id = r.u32()
	name = r.str(uint64(len(r.b)))
	if !r.ok || name == "" {
		return 0, "", malformed("meta context reply: %d bytes", len(data))
	}
	return id, name, nil
}
