package nbd

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"cairn/nbd/proto"
)

// Option data limits: anything an option we know can legitimately carry
// fits in maxOptionData (names are at most 4096 bytes). Larger data up to
// maxOptionDiscard is skipped and answered NBD_REP_ERR_TOO_BIG; beyond
// that the client is treated as hostile and disconnected.
const (
	maxOptionData    = 64 << 10
	maxOptionDiscard = 1 << 20
)

// metaContextID is the ID the server gives base:allocation in replies to
// NBD_OPT_SET_META_CONTEXT.
const metaContextID = 1

// handshakeFlags are the handshake flags the server offers.
const handshakeFlags = proto.FlagFixedNewstyle | proto.FlagNoZeroes

// errHangUp ends the handshake without an error worth logging (the client
// aborted or went away).
var errHangUp = errors.New("nbd: client ended the handshake")

// handshake runs option haggling until the client picks an export
// (NBD_OPT_GO or NBD_OPT_EXPORT_NAME), in which case c.dev is set and nil
// is returned, or until the session ends.
func (c *conn) handshake() error {
	c.bw.Write(proto.AppendGreeting(nil, handshakeFlags))
	if err := c.bw.Flush(); err != nil {
		return errHangUp
	}
	var fb [proto.ClientFlagsSize]byte
	if _, err := io.ReadFull(c.br, fb[:]); err != nil {
		return errHangUp
	}
	flags, err := proto.ParseClientFlags(fb[:], handshakeFlags)
	if err != nil {
		return err // spec "Client flags": MUST drop the connection
	}
	c.noZeroes = flags&proto.ClientFlagNoZeroes != 0

	var hb [proto.OptionHeaderSize]byte
	for {
		if _, err := io.ReadFull(c.br, hb[:]); err != nil {
			return errHangUp
		}
		h, err := proto.ParseOptionHeader(hb[:])
		if err != nil {
			return err
		}
		if h.Length > maxOptionData {
			if h.Length > maxOptionDiscard {
				return fmt.Errorf("nbd: %v with %d bytes of data", h.Option, h.Length)
			}
			if _, err := io.CopyN(io.Discard, c.br, int64(h.Length)); err != nil {
				return errHangUp
			}
			c.optError(h.Option, proto.RepErrTooBig, "option data too large")
			if err := c.bw.Flush(); err != nil {
				return errHangUp
			}
			continue
		}
		data := make([]byte, h.Length)
		if _, err := io.ReadFull(c.br, data); err != nil {
			return errHangUp
		}
		done, err := c.option(h.Option, data)
		if err != nil {
			return err
		}
		if err := c.bw.Flush(); err != nil {
			return errHangUp
		}
		if done {
			return nil
		}
	}
}

// option handles one option request. done reports that transmission
// begins; an error ends the session.
func (c *conn) option(opt proto.Option, data []byte) (done bool, err error) {
	switch opt {
	case proto.OptExportName:
		return c.optExportName(data)
	case proto.OptAbort:
		// Spec "NBD_OPT_ABORT": the server MUST reply with NBD_REP_ACK
		// (and SHOULD ignore any data).
		c.optReply(opt, proto.RepAck, nil)
		c.bw.Flush()
		return false, errHangUp
	case proto.OptList:
		return false, c.optList(data)
	case proto.OptInfo, proto.OptGo:
		return c.optInfo(opt, data)
	case proto.OptStructuredReply:
		if len(data) != 0 {
			return false, c.optError(opt, proto.RepErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data")
		}
		c.structured = true
		c.optReply(opt, proto.RepAck, nil)
		return false, nil
	case proto.OptListMetaContext, proto.OptSetMetaContext:
		return false, c.optMetaContext(opt, data)
	}
	// Spec "Baseline": options the server does not implement get
	// NBD_REP_ERR_UNSUP (this includes STARTTLS: the server runs in NOTLS
	// mode).
	return false, c.optError(opt, proto.RepErrUnsup, "unsupported option "+opt.String())
}

func (c *conn) optReply(opt proto.Option, typ proto.RepType, data []byte) {
	c.bw.Write(proto.AppendOptionReply(c.scratch[:0], opt, typ, data))
}

// optError sends an error reply with msg for humans. It returns nil: an
// option error never ends the session by itself.
func (c *conn) optError(opt proto.Option, typ proto.RepType, msg string) error {
	if !proto.ValidString(msg) {
		msg = "error"
	}
	c.optReply(opt, typ, []byte(msg))
	c.log.Debug("nbd: option refused", "option", opt, "reply", typ, "msg", msg)
	return nil
}

// exportName resolves the empty name to the default export.
func (c *conn) exportName(name string) string {
	if name == "" {
		return c.s.DefaultExport
	}
	return name
}

// open opens export name (already resolved), reusing the device a previous
// NBD_OPT_INFO opened for the same name.
func (c *conn) open(name string) (Device, error) {
	if c.pending != nil && c.pendingName == name {
		d := c.pending
		c.pending = nil
		return d, nil
	}
	c.closePending()
	d, err := c.s.Exports.Open(c.ctx, name)
	if err != nil {
		return nil, err
	}
	if d.Size() < 0 {
		d.Close(c.ctx)
		return nil, fmt.Errorf("nbd: export %q reports negative size %d", name, d.Size())
	}
	return d, nil
}

// closePending closes a device opened by NBD_OPT_INFO and not used.
func (c *conn) closePending() {
	if c.pending != nil {
		if err := c.pending.Close(c.ctx); err != nil {
			c.log.Warn("nbd: close", "export", c.pendingName, "err", err)
		}
		c.pending = nil
	}
}

// transmissionFlags are the flags advertised for dev on this connection
// (spec "Transmission flags").
func (c *conn) transmissionFlags(dev Device) proto.TransmissionFlags {
	f := proto.FlagHasFlags | proto.FlagSendFlush | proto.FlagSendCache
	if dev.ReadOnly() {
		f |= proto.FlagReadOnly
	} else {
		f |= proto.FlagSendFUA | proto.FlagSendTrim | proto.FlagSendWriteZeroes | proto.FlagSendFastZero
	}
	if c.structured {
		// Every READ is answered with a single content chunk, so
		// NBD_CMD_FLAG_DF is honoured trivially; the flag MUST stay clear
		// without structured replies.
		f |= proto.FlagSendDF
	}
	if c.s.MultiConn {
		f |= proto.FlagCanMultiConn
	}
	return f
}

// blockSize returns the size constraints advertised for dev: minimum 512,
// preferred the device's block size (when it is a usable power of two),
// maximum the payload limit.
func (c *conn) blockSize(dev Device) proto.BlockSize {
	maxp := uint32(c.s.maxPayload())
	pref := uint32(4096)
	if b := dev.BlockSize(); b >= 512 && b&(b-1) == 0 && b <= 1<<30 {
		pref = uint32(b)
	}
	pref = min(pref, max(maxp, 512))
	return proto.BlockSize{Minimum: 512, Preferred: pref, Maximum: max(maxp, pref)}
}

// begin switches to transmission with dev.
func (c *conn) begin(dev Device, name string) {
	c.dev = dev
	c.devName = name
	c.size = uint64(dev.Size())
	c.flags = c.transmissionFlags(dev)
	c.blockStatus = c.metaSelected && c.metaExport == name && c.structured
}

// optExportName handles NBD_OPT_EXPORT_NAME. It cannot report errors: the
// server MUST terminate the session if it cannot open the export.
func (c *conn) optExportName(data []byte) (bool, error) {
	name := string(data)
	if !proto.ValidString(name) {
		return false, fmt.Errorf("nbd: NBD_OPT_EXPORT_NAME: invalid name")
	}
	name = c.exportName(name)
	dev, err := c.open(name)
	if err != nil {
		return false, fmt.Errorf("nbd: open %q: %w", name, err)
	}
	c.begin(dev, name)
	c.bw.Write(proto.AppendExportNameReply(c.scratch[:0], c.size, c.flags, c.noZeroes))
	return true, nil
}

// optList handles NBD_OPT_LIST: one NBD_REP_SERVER per export, then ACK.
func (c *conn) optList(data []byte) error {
	opt := proto.OptList
	if len(data) != 0 {
		return c.optError(opt, proto.RepErrInvalid, "NBD_OPT_LIST takes no data")
	}
	list, err := c.s.Exports.List(c.ctx)
	if err != nil {
		rep, _ := protocolError(err, c.s.Classify)
		if rep == proto.RepErrUnknown {
			rep = proto.RepErrPolicy // "not available" does not fit a list
		}
		return c.optError(opt, rep, "cannot list exports")
	}
	for _, e := range list {
		if !proto.ValidString(e.Name) {
			continue
		}
		desc := e.Description
		if !proto.ValidString(desc) {
			desc = ""
		}
		c.optReply(opt, proto.RepServer, proto.AppendServer(nil, e.Name, desc))
	}
	c.optReply(opt, proto.RepAck, nil)
	return nil
}

// description looks the export's description up in the list.
func (c *conn) description(name string) string {
	list, err := c.s.Exports.List(c.ctx)
	if err != nil {
		return ""
	}
	for _, e := range list {
		if e.Name == name && proto.ValidString(e.Description) {
			return e.Description
		}
	}
	return ""
}

// optInfo handles NBD_OPT_INFO and NBD_OPT_GO (spec "NBD_OPT_INFO and
// NBD_OPT_GO"): NBD_INFO_EXPORT always, NBD_INFO_BLOCK_SIZE always (the
// client may ignore it), NBD_INFO_NAME and NBD_INFO_DESCRIPTION when asked.
func (c *conn) optInfo(opt proto.Option, data []byte) (bool, error) {
	q, err := proto.ParseInfoRequest(data)
	if err != nil {
		return false, c.optError(opt, proto.RepErrInvalid, "malformed "+opt.String())
	}
	name := c.exportName(q.Name)
	dev, err := c.open(name)
	if err != nil {
		rep, _ := protocolError(err, c.s.Classify)
		return false, c.optError(opt, rep, fmt.Sprintf("export %q: %v", name, err))
	}
	c.optReply(opt, proto.RepInfo, proto.AppendInfoExport(nil, uint64(dev.Size()), c.transmissionFlags(dev)))
	c.optReply(opt, proto.RepInfo, proto.AppendInfoBlockSize(nil, c.blockSize(dev)))
	if q.Wants(proto.InfoName) && proto.ValidString(name) {
		c.optReply(opt, proto.RepInfo, proto.AppendInfoName(nil, name))
	}
	if q.Wants(proto.InfoDescription) {
		if d := c.description(name); d != "" {
			c.optReply(opt, proto.RepInfo, proto.AppendInfoDescription(nil, d))
		}
	}
	c.optReply(opt, proto.RepAck, nil)
	if opt == proto.OptGo {
		c.begin(dev, name)
		return true, nil
	}
	c.pending, c.pendingName = dev, name
	return false, nil
}

// optMetaContext handles NBD_OPT_LIST_META_CONTEXT and
// NBD_OPT_SET_META_CONTEXT for the one context this server has,
// base:allocation (spec "Metadata querying", "The base: metadata
// namespace").
func (c *conn) optMetaContext(opt proto.Option, data []byte) error {
	set := opt == proto.OptSetMetaContext
	if set {
		// Issuing SET replaces the previous selection, even when it fails.
		c.metaSelected = false
	}
	if !c.structured {
		return c.optError(opt, proto.RepErrInvalid, "negotiate NBD_OPT_STRUCTURED_REPLY first")
	}
	q, err := proto.ParseMetaContextRequest(data)
	if err != nil {
		return c.optError(opt, proto.RepErrInvalid, "malformed "+opt.String())
	}
	match := !set && len(q.Queries) == 0 // LIST with no query: everything
	for _, s := range q.Queries {
		ns, leaf, ok := strings.Cut(s, ":")
		if !ok || ns == "" {
			return c.optError(opt, proto.RepErrInvalid, fmt.Sprintf("query %q has no namespace", s))
		}
		if ns != "base" {
			continue // unknown namespaces MUST be ignored
		}
		// "base:" is a wildcard for LIST and MUST be ignored by SET;
		// unknown leaf names MUST be ignored.
		if leaf == "allocation" || (leaf == "" && !set) {
			match = true
		}
	}
	if match {
		id := uint32(0) // reserved in LIST replies
		if set {
			id = metaContextID
			c.metaSelected = true
			c.metaExport = c.exportName(q.Export)
		}
		c.optReply(opt, proto.RepMetaContext, proto.AppendMetaContext(nil, id, proto.ContextBaseAllocation))
	}
	c.optReply(opt, proto.RepAck, nil)
	return nil
}
