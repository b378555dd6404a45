package proto

import (
	"bytes"
	"testing"
)

// Every decoder is fuzzed: it must not panic, and whatever it accepts must
// re-encode to the same bytes (or, for decoders that normalize, decode
// again to the same value).

func FuzzParseRequest(f *testing.F) {
	f.Add(AppendRequest(nil, Request{Type: CmdWrite, Length: 512}))
	f.Add(make([]byte, 28))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRequest(b)
		if err != nil {
			return
		}
		if !bytes.Equal(AppendRequest(nil, r), b) {
			t.Fatalf("round trip of % x", b)
		}
	})
}

func FuzzParseOptionHeader(f *testing.F) {
	f.Add(AppendOptionRequest(nil, OptGo, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseOptionHeader(b)
		if err != nil {
			return
		}
		got := AppendOptionRequest(nil, h.Option, nil)
		if !bytes.Equal(got[:12], b[:12]) {
			t.Fatalf("round trip of % x", b)
		}
	})
}

func FuzzParseClientFlags(f *testing.F) {
	f.Add([]byte{0, 0, 0, 3}, uint16(3))
	f.Fuzz(func(t *testing.T, b []byte, offered uint16) {
		fl, err := ParseClientFlags(b, offered)
		if err == nil && fl&^3 != 0 {
			t.Fatalf("accepted unknown flags %#x", fl)
		}
	})
}

func FuzzParseInfoRequest(f *testing.F) {
	f.Add(AppendInfoRequest(nil, InfoRequest{Name: "disk", Requests: []InfoType{InfoBlockSize}}))
	f.Add([]byte{0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := ParseInfoRequest(b)
		if err != nil {
			return
		}
		if !bytes.Equal(AppendInfoRequest(nil, q), b) {
			t.Fatalf("round trip of % x", b)
		}
	})
}

func FuzzParseMetaContextRequest(f *testing.F) {
	f.Add(AppendMetaContextRequest(nil, MetaContextRequest{Export: "e", Queries: []string{"base:allocation"}}))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := ParseMetaContextRequest(b)
		if err != nil {
			return
		}
		if !bytes.Equal(AppendMetaContextRequest(nil, q), b) {
			t.Fatalf("round trip of % x", b)
		}
	})
}

func FuzzParseReplies(f *testing.F) {
	f.Add(AppendOptionReply(nil, OptList, RepServer, AppendServer(nil, "a", "b")))
	f.Add(AppendOptionReply(nil, OptGo, RepInfo, AppendInfoBlockSize(nil, BlockSize{512, 4096, 1 << 25})))
	f.Add(AppendOptionReply(nil, OptSetMetaContext, RepMetaContext, AppendMetaContext(nil, 1, ContextBaseAllocation)))
	f.Add(AppendGreeting(nil, 3))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Client-side decoders: none may panic.
		_, _ = ParseGreeting(b)
		if len(b) >= OptionReplyHeaderSize {
			_, _ = ParseOptionReplyHeader(b[:OptionReplyHeaderSize])
			p := b[OptionReplyHeaderSize:]
			_, _, _ = ParseServer(p)
			_, _, _ = ParseMetaContext(p)
			if inf, err := ParseInfo(p); err == nil && inf.Type == InfoExport {
				if !bytes.Equal(AppendInfoExport(nil, inf.Size, inf.Flags), p) {
					t.Fatalf("info export round trip of % x", p)
				}
			}
		}
	})
}

func FuzzParseChunks(f *testing.F) {
	f.Add(AppendNone(nil, 1))
	f.Add(append(AppendOffsetDataHeader(nil, 1, 1, 0, 1), 'x'))
	f.Add(AppendOffsetHole(nil, 1, 1, 0, 512))
	f.Add(AppendBlockStatus(nil, 1, 1, 1, []Extent{{512, 3}}))
	f.Add(AppendError(nil, 1, 1, EIO, "x"))
	f.Add(AppendErrorOffset(nil, 1, 1, EIO, "x", 9))
	f.Add(AppendSimpleReply(nil, 1, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) >= SimpleReplySize {
			_, _, _ = ParseSimpleReply(b[:SimpleReplySize])
		}
		if len(b) < ChunkHeaderSize {
			return
		}
		h, err := ParseChunkHeader(b[:ChunkHeaderSize])
		if err != nil {
			return
		}
		p := b[ChunkHeaderSize:]
		switch {
		case h.Type == ReplyOffsetData:
			_, _, _ = ParseOffsetData(p)
		case h.Type == ReplyOffsetHole:
			if off, n, err := ParseOffsetHole(p); err == nil && !bytes.Equal(AppendOffsetHole(nil, 0, 0, off, n)[ChunkHeaderSize:], p) {
				t.Fatal("hole round trip")
			}
		case h.Type == ReplyBlockStatus:
			if id, ext, err := ParseBlockStatus(p); err == nil && !bytes.Equal(AppendBlockStatus(nil, 0, 0, id, ext)[ChunkHeaderSize:], p) {
				t.Fatal("block status round trip")
			}
		case h.Type.IsError():
			_, _ = ParseErrorChunk(h.Type, p)
		}
	})
}
