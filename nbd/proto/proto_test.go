package proto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

func hexEq(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s:\n got % x\nwant % x", what, got, want)
	}
}

// Spec "Newstyle negotiation": S: NBDMAGIC, IHAVEOPT, 16 bits handshake
// flags. Spec "Handshake flags": bit 0 FIXED_NEWSTYLE, bit 1 NO_ZEROES.
func TestGreeting(t *testing.T) {
	b := AppendGreeting(nil, FlagFixedNewstyle|FlagNoZeroes)
	hexEq(t, "greeting", b, []byte("NBDMAGICIHAVEOPT\x00\x03"))
	f, err := ParseGreeting(b)
	if err != nil || f != 3 {
		t.Fatalf("ParseGreeting = %d, %v", f, err)
	}
	b[0] = 'X'
	if _, err := ParseGreeting(b); !errors.Is(err, ErrMagic) {
		t.Fatalf("bad magic: %v", err)
	}
}

// Spec "Client flags": clients MUST NOT set other flags; the server MUST
// drop the connection if the client sets an unknown flag, or a flag that
// does not match something advertised by the server.
func TestClientFlags(t *testing.T) {
	tests := []struct {
		flags   uint32
		offered uint16
		ok      bool
	}{
		{0, FlagFixedNewstyle | FlagNoZeroes, true},
		{ClientFlagFixedNewstyle, FlagFixedNewstyle | FlagNoZeroes, true},
		{ClientFlagFixedNewstyle | ClientFlagNoZeroes, FlagFixedNewstyle | FlagNoZeroes, true},
		{ClientFlagNoZeroes, FlagFixedNewstyle, false}, // not offered
		{1 << 2, FlagFixedNewstyle | FlagNoZeroes, false},
		{1 << 31, FlagFixedNewstyle | FlagNoZeroes, false},
	}
	for _, tt := range tests {
		_, err := ParseClientFlags(binary.BigEndian.AppendUint32(nil, tt.flags), tt.offered)
		if (err == nil) != tt.ok {
			t.Errorf("flags %#x offered %#x: err %v, want ok=%v", tt.flags, tt.offered, err, tt.ok)
		}
	}
	if _, err := ParseClientFlags([]byte{0, 0, 0}, 3); err == nil {
		t.Error("short client flags accepted")
	}
}

// Spec "Newstyle negotiation": C: IHAVEOPT, 32 bits option, 32 bits length,
// data. A wrong magic means the stream is out of sync.
func TestOptionHeader(t *testing.T) {
	b := AppendOptionRequest(nil, OptGo, []byte{1, 2, 3})
	hexEq(t, "option", b, []byte("IHAVEOPT\x00\x00\x00\x07\x00\x00\x00\x03\x01\x02\x03"))
	h, err := ParseOptionHeader(b[:OptionHeaderSize])
	if err != nil || h != (OptionHeader{Option: OptGo, Length: 3}) {
		t.Fatalf("ParseOptionHeader = %+v, %v", h, err)
	}
	b[3] ^= 1
	if _, err := ParseOptionHeader(b[:OptionHeaderSize]); !errors.Is(err, ErrMagic) {
		t.Fatalf("bad magic: %v", err)
	}
}

// Spec "Fixed newstyle negotiation": S: 0x3e889045565a9, option, reply
// type, length, data. Spec "Option reply types": errors have bit 31 set.
func TestOptionReply(t *testing.T) {
	b := AppendOptionReply(nil, OptList, RepErrUnsup, []byte("no"))
	want := []byte{0, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9, 0, 0, 0, 3, 0x80, 0, 0, 1, 0, 0, 0, 2, 'n', 'o'}
	hexEq(t, "reply", b, want)
	h, err := ParseOptionReplyHeader(b[:OptionReplyHeaderSize])
	if err != nil || h != (OptionReplyHeader{OptList, RepErrUnsup, 2}) {
		t.Fatalf("ParseOptionReplyHeader = %+v, %v", h, err)
	}
	if !RepErrUnsup.IsError() || RepAck.IsError() || !RepErrTooBig.IsError() {
		t.Fatal("IsError")
	}
	if RepErrUnknown != 0x80000006 || RepErrShutdown != 0x80000007 || RepErrPolicy != 0x80000002 || RepErrInvalid != 0x80000003 {
		t.Fatal("error reply values differ from the spec")
	}
}

// Spec "NBD_OPT_EXPORT_NAME": S: 64 bits size, 16 bits transmission flags,
// 124 bytes zeroes unless NBD_FLAG_C_NO_ZEROES was negotiated.
func TestExportNameReply(t *testing.T) {
	b := AppendExportNameReply(nil, 1<<20, FlagHasFlags|FlagSendFlush, false)
	if len(b) != ExportNameReplySize+ExportNamePadding {
		t.Fatalf("len %d", len(b))
	}
	hexEq(t, "head", b[:10], []byte{0, 0, 0, 0, 0, 0x10, 0, 0, 0, 5})
	if !bytes.Equal(b[10:], make([]byte, 124)) {
		t.Fatal("padding not zero")
	}
	if b := AppendExportNameReply(nil, 1, 1, true); len(b) != ExportNameReplySize {
		t.Fatalf("NO_ZEROES reply is %d bytes", len(b))
	}
}

// Spec "NBD_OPT_INFO and NBD_OPT_GO": data is 32 bits name length (MUST be
// no larger than the option data length - 6), name, 16 bits count, 16 bits
// x count information requests.
func TestInfoRequest(t *testing.T) {
	q := InfoRequest{Name: "disk", Requests: []InfoType{InfoBlockSize, InfoName}}
	b := AppendInfoRequest(nil, q)
	hexEq(t, "info", b, []byte{0, 0, 0, 4, 'd', 'i', 's', 'k', 0, 2, 0, 3, 0, 1})
	got, err := ParseInfoRequest(b)
	if err != nil || got.Name != "disk" || len(got.Requests) != 2 || !got.Wants(InfoName) || got.Wants(InfoDescription) {
		t.Fatalf("ParseInfoRequest = %+v, %v", got, err)
	}
	// The empty name is the default export.
	got, err = ParseInfoRequest([]byte{0, 0, 0, 0, 0, 0})
	if err != nil || got.Name != "" || len(got.Requests) != 0 {
		t.Fatalf("empty = %+v, %v", got, err)
	}
	bad := [][]byte{
		{},
		{0, 0, 0, 1, 'a'},              // no count
		{0, 0, 0, 9, 'a', 0, 0},        // name past the end
		{0, 0, 0, 0, 0, 1},             // count 1, no request
		{0, 0, 0, 0, 0, 0, 0},          // trailing byte
		{0, 0, 0, 1, 0, 0, 0},          // NUL in the name
		{0xff, 0xff, 0xff, 0xff, 0, 0}, // huge length
	}
	for _, b := range bad {
		if _, err := ParseInfoRequest(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseInfoRequest(% x) = %v, want ErrMalformed", b, err)
		}
	}
	long := AppendInfoRequest(nil, InfoRequest{Name: strings.Repeat("x", MaxString+1)})
	if _, err := ParseInfoRequest(long); err == nil {
		t.Error("name longer than 4096 bytes accepted (spec \"Conventions\")")
	}
}

// Spec "NBD_REP_INFO": NBD_INFO_EXPORT length 12 (type, size, flags);
// NBD_INFO_NAME and NBD_INFO_DESCRIPTION at least 2; NBD_INFO_BLOCK_SIZE
// length 14. Clients MUST ignore unknown information types.
func TestInfoItems(t *testing.T) {
	e := AppendInfoExport(nil, 4096, FlagHasFlags|FlagReadOnly)
	hexEq(t, "export", e, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 3})
	bs := BlockSize{512, 4096, 32 << 20}
	b := AppendInfoBlockSize(nil, bs)
	hexEq(t, "block size", b, []byte{0, 3, 0, 0, 2, 0, 0, 0, 0x10, 0, 0x02, 0, 0, 0})
	for _, tt := range []struct {
		b    []byte
		want Info
	}{
		{e, Info{Type: InfoExport, Size: 4096, Flags: 3}},
		{b, Info{Type: InfoBlockSize, BlockSize: bs}},
		{AppendInfoName(nil, "n"), Info{Type: InfoName, Name: "n"}},
		{AppendInfoDescription(nil, ""), Info{Type: InfoDescription}},
		{[]byte{0, 99, 1, 2, 3}, Info{Type: 99}},
	} {
		got, err := ParseInfo(tt.b)
		if err != nil || got != tt.want {
			t.Errorf("ParseInfo(% x) = %+v, %v; want %+v", tt.b, got, err, tt.want)
		}
	}
	for _, b := range [][]byte{{0}, e[:11], append(e, 0), b[:13]} {
		if _, err := ParseInfo(b); err == nil {
			t.Errorf("ParseInfo(% x) accepted", b)
		}
	}
}

// Spec "Size constraints": minimum a power of 2 no larger than 2^16;
// preferred a power of 2 at least max(minimum, 512); maximum at least
// preferred.
func TestBlockSizeValid(t *testing.T) {
	for _, tt := range []struct {
		bs BlockSize
		ok bool
	}{
		{BlockSize{512, 4096, 32 << 20}, true},
		{BlockSize{1, 512, 512}, true},
		{BlockSize{512, 256, 1 << 20}, false},
		{BlockSize{3, 4096, 1 << 20}, false},
		{BlockSize{1 << 17, 1 << 17, 1 << 20}, false},
		{BlockSize{512, 4096, 1024}, false},
		{BlockSize{512, 6144, 1 << 20}, false},
	} {
		if tt.bs.Valid() != tt.ok {
			t.Errorf("%+v.Valid() = %v", tt.bs, !tt.ok)
		}
	}
}

// Spec "NBD_REP_SERVER": 32 bits name length (no larger than the reply
// length - 4), name, then implementation-specific details (a description).
func TestServerReply(t *testing.T) {
	b := AppendServer(nil, "vol", "a disk")
	hexEq(t, "server", b, []byte("\x00\x00\x00\x03vola disk"))
	n, d, err := ParseServer(b)
	if err != nil || n != "vol" || d != "a disk" {
		t.Fatalf("ParseServer = %q %q %v", n, d, err)
	}
	if _, _, err := ParseServer([]byte{0, 0, 0, 5, 'a'}); err == nil {
		t.Fatal("name past the end accepted")
	}
}

// Spec "NBD_OPT_LIST_META_CONTEXT" / "NBD_OPT_SET_META_CONTEXT": export
// name length, name, 32 bits number of queries, each a 32-bit length and a
// string; a query length reaching past the option data MUST be answered
// with NBD_REP_ERR_INVALID (here: ErrMalformed).
func TestMetaContextRequest(t *testing.T) {
	q := MetaContextRequest{Export: "e", Queries: []string{"base:allocation", "x-a:"}}
	b := AppendMetaContextRequest(nil, q)
	got, err := ParseMetaContextRequest(b)
	if err != nil || got.Export != "e" || len(got.Queries) != 2 || got.Queries[0] != "base:allocation" || got.Queries[1] != "x-a:" {
		t.Fatalf("ParseMetaContextRequest = %+v, %v", got, err)
	}
	got, err = ParseMetaContextRequest([]byte{0, 0, 0, 0, 0, 0, 0, 0})
	if err != nil || got.Export != "" || len(got.Queries) != 0 {
		t.Fatalf("zero queries = %+v, %v", got, err)
	}
	for _, b := range [][]byte{
		{0, 0, 0, 0},
		{0, 0, 0, 0, 0, 0, 0, 1},
		{0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 5, 'b'},
		{0, 0, 0, 0, 0, 0, 0, 0, 9},
		{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff},
	} {
		if _, err := ParseMetaContextRequest(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseMetaContextRequest(% x) = %v", b, err)
		}
	}
}

// Spec "NBD_REP_META_CONTEXT": 32 bits context ID, then the name.
func TestMetaContextReply(t *testing.T) {
	b := AppendMetaContext(nil, 7, ContextBaseAllocation)
	id, name, err := ParseMetaContext(b)
	if err != nil || id != 7 || name != "base:allocation" {
		t.Fatalf("ParseMetaContext = %d %q %v", id, name, err)
	}
}

// Spec "Request message": magic 0x25609513, 16 bits flags, 16 bits type,
// 64 bits cookie, 64 bits offset, 32 bits length.
func TestRequest(t *testing.T) {
	r := Request{Flags: CmdFlagFUA, Type: CmdWrite, Cookie: 0x0102030405060708, Offset: 4096, Length: 512}
	b := AppendRequest(nil, r)
	hexEq(t, "request", b, []byte{0x25, 0x60, 0x95, 0x13, 0, 1, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 2, 0})
	got, err := ParseRequest(b)
	if err != nil || got != r {
		t.Fatalf("ParseRequest = %+v, %v", got, err)
	}
	b[0] = 0x12 // historic magic 0x12560953 is reserved, not accepted
	if _, err := ParseRequest(b); !errors.Is(err, ErrMagic) {
		t.Fatalf("bad magic: %v", err)
	}
	if _, err := ParseRequest(b[:27]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short: %v", err)
	}
	if _, ok := (Request{Offset: 1<<64 - 1, Length: 2}).End(); ok {
		t.Fatal("End overflow not detected")
	}
}

// Spec "Simple reply message": magic 0x67446698, 32 bits error, 64 bits
// cookie.
func TestSimpleReply(t *testing.T) {
	b := AppendSimpleReply(nil, 9, EINVAL)
	hexEq(t, "simple", b, []byte{0x67, 0x44, 0x66, 0x98, 0, 0, 0, 22, 0, 0, 0, 0, 0, 0, 0, 9})
	c, e, err := ParseSimpleReply(b)
	if err != nil || c != 9 || e != EINVAL {
		t.Fatalf("ParseSimpleReply = %d %v %v", c, e, err)
	}
}

// Spec "Error values": the numeric values.
func TestErrnoValues(t *testing.T) {
	want := map[Errno]uint32{EPERM: 1, EIO: 5, ENOMEM: 12, EINVAL: 22, ENOSPC: 28, EOVERFLOW: 75, ENOTSUP: 95, ESHUTDOWN: 108}
	for e, v := range want {
		if uint32(e) != v {
			t.Errorf("%v = %d, want %d", e, uint32(e), v)
		}
	}
}

// Spec "Structured reply chunk message": magic 0x668e33ef, 16 bits flags,
// 16 bits type, 64 bits cookie, 32 bits length. "NBD_REPLY_TYPE_NONE":
// length 0, always with NBD_REPLY_FLAG_DONE.
func TestChunkNone(t *testing.T) {
	b := AppendNone(nil, 5)
	hexEq(t, "none", b, []byte{0x66, 0x8e, 0x33, 0xef, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0})
	h, err := ParseChunkHeader(b)
	if err != nil || !h.Done() || h.Type != ReplyNone || h.Length != 0 || h.Cookie != 5 {
		t.Fatalf("ParseChunkHeader = %+v, %v", h, err)
	}
}

// Spec "NBD_REPLY_TYPE_OFFSET_DATA": length at least 9; 64 bits offset then
// length-8 bytes of data.
func TestChunkOffsetData(t *testing.T) {
	b := AppendOffsetDataHeader(nil, ReplyFlagDone, 1, 512, 3)
	b = append(b, 'a', 'b', 'c')
	h, _ := ParseChunkHeader(b[:ChunkHeaderSize])
	if h.Type != ReplyOffsetData || h.Length != 11 {
		t.Fatalf("header %+v", h)
	}
	off, data, err := ParseOffsetData(b[ChunkHeaderSize:])
	if err != nil || off != 512 || string(data) != "abc" {
		t.Fatalf("ParseOffsetData = %d %q %v", off, data, err)
	}
	if _, _, err := ParseOffsetData(make([]byte, 8)); err == nil {
		t.Fatal("8-byte payload accepted")
	}
}

// Spec "NBD_REPLY_TYPE_OFFSET_HOLE": length exactly 12; offset, 32 bits
// hole size which MUST be nonzero.
func TestChunkOffsetHole(t *testing.T) {
	b := AppendOffsetHole(nil, 0, 1, 4096, 8192)
	off, size, err := ParseOffsetHole(b[ChunkHeaderSize:])
	if err != nil || off != 4096 || size != 8192 {
		t.Fatalf("ParseOffsetHole = %d %d %v", off, size, err)
	}
	if _, _, err := ParseOffsetHole(make([]byte, 12)); err == nil {
		t.Fatal("zero hole size accepted")
	}
}

// Spec "NBD_REPLY_TYPE_BLOCK_STATUS": length 4 + a positive multiple of 8;
// 32 bits context ID, then descriptors of 32 bits length (MUST NOT be
// zero) and 32 bits status.
func TestChunkBlockStatus(t *testing.T) {
	ext := []Extent{{4096, StateHole | StateZero}, {512, 0}}
	b := AppendBlockStatus(nil, ReplyFlagDone, 3, 1, ext)
	hexEq(t, "block status", b[ChunkHeaderSize:], []byte{0, 0, 0, 1, 0, 0, 0x10, 0, 0, 0, 0, 3, 0, 0, 2, 0, 0, 0, 0, 0})
	id, got, err := ParseBlockStatus(b[ChunkHeaderSize:])
	if err != nil || id != 1 || len(got) != 2 || got[0] != ext[0] || got[1] != ext[1] {
		t.Fatalf("ParseBlockStatus = %d %v %v", id, got, err)
	}
	for _, p := range [][]byte{{0, 0, 0, 1}, make([]byte, 13), {0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}} {
		if _, _, err := ParseBlockStatus(p); err == nil {
			t.Errorf("ParseBlockStatus(% x) accepted", p)
		}
	}
}

// Spec "NBD_REPLY_TYPE_ERROR": length at least 6; 32 bits error (nonzero),
// 16 bits message length, message. "NBD_REPLY_TYPE_ERROR_OFFSET": length
// at least 14, the same fields then a 64-bit offset. Error types have bit
// 15 set.
func TestChunkErrors(t *testing.T) {
	b := AppendError(nil, ReplyFlagDone, 1, EIO, "boom")
	h, _ := ParseChunkHeader(b[:ChunkHeaderSize])
	if h.Type != ReplyError || !h.Type.IsError() || h.Length != 10 {
		t.Fatalf("header %+v", h)
	}
	ce, err := ParseErrorChunk(h.Type, b[ChunkHeaderSize:])
	if err != nil || ce.Errno != EIO || ce.Message != "boom" {
		t.Fatalf("ParseErrorChunk = %+v, %v", ce, err)
	}
	b = AppendErrorOffset(nil, ReplyFlagDone, 1, ENOSPC, "", 77)
	ce, err = ParseErrorChunk(ReplyErrorOffset, b[ChunkHeaderSize:])
	if err != nil || ce.Errno != ENOSPC || ce.Offset != 77 {
		t.Fatalf("ParseErrorChunk offset = %+v, %v", ce, err)
	}
	if _, err := ParseErrorChunk(ReplyError, []byte{0, 0, 0, 0, 0, 0}); err == nil {
		t.Fatal("zero error accepted")
	}
	if _, err := ParseErrorChunk(ReplyError, []byte{0, 0, 0, 5, 0, 9, 'a'}); err == nil {
		t.Fatal("message past the end accepted")
	}
	long := AppendError(nil, 0, 1, EIO, strings.Repeat("é", MaxString))
	if ce, err := ParseErrorChunk(ReplyError, long[ChunkHeaderSize:]); err != nil || len(ce.Message) > MaxString {
		t.Fatalf("long message: %d bytes, %v", len(ce.Message), err)
	}
}

func TestStrings(t *testing.T) {
	if ValidString("a\x00b") || ValidString("\xff") || ValidString(strings.Repeat("a", MaxString+1)) || !ValidString("") || !ValidString("disk-1") {
		t.Fatal("ValidString")
	}
	if CmdBlockStatus.String() != "NBD_CMD_BLOCK_STATUS" || OptGo.String() != "NBD_OPT_GO" || EINVAL.String() != "NBD_EINVAL" {
		t.Fatal("String methods")
	}
}
