package policies

import (
	"fmt"
	"strconv"
	"strings"
)

// Format returns p's canonical TOML encoding: every key written, in the
// order of the file format, without comments. The volume layer stores a
// volume's policy this way. For every valid p, Parse(any name, p.Format())
// returns a Policy equal (==) to p; equal policies give equal bytes. Format
// does not validate p. The returned slice is the caller's.
func (p Policy) Format() []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "name        = %s\n", tomlString(p.Name))
	fmt.Fprintf(&b, "block_size  = %s\n", tomlString(p.BlockSize.String()))
	fmt.Fprintf(&b, "compression = %s\n", tomlString(string(p.Compression)))
	fmt.Fprintf(&b, "dedup       = %t\n", p.Dedup)
	b.WriteString("\n[redundancy]\n")
	if p.Redundancy.Replicas != 0 || p.Redundancy.Data == 0 && p.Redundancy.Parity == 0 {
		fmt.Fprintf(&b, "replicas = %d\n", p.Redundancy.Replicas)
	}
	if p.Redundancy.Data != 0 || p.Redundancy.Parity != 0 {
		fmt.Fprintf(&b, "data     = %d\n", p.Redundancy.Data)
		fmt.Fprintf(&b, "parity   = %d\n", p.Redundancy.Parity)
	}
	fmt.Fprintf(&b, "\n[encryption]\ncipher = %s\n", tomlString(string(p.Cipher)))
	fmt.Fprintf(&b, "\n[versioning]\nkeep = %d\n", p.Keep)
	fmt.Fprintf(&b, "\n[placement]\nspread = %s\n", tomlString(string(p.Spread)))
	return []byte(b.String())
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// String returns a one-line summary, e.g.
// "database: 4KiB blocks, 3 replicas spread by zone, aes-256-gcm, no
// compression, no dedup, keep 0".
func (p Policy) String() string {
	parts := []string{p.BlockSize.String() + " blocks", p.Redundancy.String() + spreadPhrase(p.Spread)}
	if p.Cipher == CipherNone {
		parts = append(parts, "no encryption")
	} else {
		parts = append(parts, string(p.Cipher))
	}
	if p.Compression == CompressionNone {
		parts = append(parts, "no compression")
	} else {
		parts = append(parts, string(p.Compression))
	}
	if p.Dedup {
		parts = append(parts, "dedup")
	} else {
		parts = append(parts, "no dedup")
	}
	parts = append(parts, "keep "+strconv.Itoa(p.Keep))
	return p.Name + ": " + strings.Join(parts, ", ")
}

func spreadPhrase(s Spread) string {
	switch s {
	case SpreadNone:
		return ", not spread"
	case SpreadNode:
		return " spread by node"
	case SpreadZone:
		return " spread by zone"
	}
	return " spread " + strconv.Quote(string(s))
}

// String returns "3 replicas", "1 replica" or "4+2 erasure coding".
func (r Redundancy) String() string {
	switch {
	case r.Replicas == 1:
		return "1 replica"
	case r.Replicas > 0:
		return strconv.Itoa(r.Replicas) + " replicas"
	default:
		return fmt.Sprintf("%d+%d erasure coding", r.Data, r.Parity)
	}
}

// Overhead returns the bytes stored per byte of (compressed) data: Replicas
// for replication, (Data+Parity)/Data for erasure coding; 0 if unset.
func (r Redundancy) Overhead() float64 {
	if r.Replicas > 0 {
		return float64(r.Replicas)
	}
	if r.Data <= 0 {
		return 0
	}
	return float64(r.Data+r.Parity) / float64(r.Data)
}

// overheadText writes an overhead with one or two decimals: "3.0x", "1.5x",
// "1.67x".
func overheadText(x float64) string {
	s := strconv.FormatFloat(x, 'f', 2, 64)
	s = strings.TrimSuffix(s, "0")
	return s + "x"
}

// Describe explains p in a few lines for `cairn policy check FILE`: block
// size and pipeline, what the redundancy and placement survive, the storage
// overhead, encryption and versioning. It assumes p is valid.
func (p Policy) Describe() string {
	var b strings.Builder
	r := p.Redundancy
	line := func(label, format string, args ...any) {
		fmt.Fprintf(&b, "  %-12s %s\n", label+":", fmt.Sprintf(format, args...))
	}
	b.WriteString(p.String() + "\n")

	blocks := fmt.Sprintf("data is stored in %s blocks", p.BlockSize)
	if p.Compression != CompressionNone {
		blocks += fmt.Sprintf(", each compressed with %s", p.Compression)
	} else {
		blocks += ", not compressed"
	}
	line("blocks", "%s", blocks)
	if p.Dedup {
		line("dedup", "on: equal blocks within the volume are stored once")
	} else {
		line("dedup", "off: equal blocks are stored separately")
	}

	if r.Replicas > 0 {
		if r.Replicas == 1 {
			line("redundancy", "1 copy of every block")
		} else {
			line("redundancy", "%d full copies of every block", r.Replicas)
		}
	} else if r.Data > 0 {
		piece := (int64(p.BlockSize) + int64(r.Data) - 1) / int64(r.Data)
		line("redundancy", "every block is cut into %d data pieces of %s plus %d parity pieces; any %d of the %d pieces rebuild it",
			r.Data, Size(piece), r.Parity, r.Data, r.Pieces())
	}
	line("overhead", "%s (every 1GiB written takes %s of raw disk, before compression)",
		overheadText(r.Overhead()), overheadGiB(r.Overhead()))

	t := r.Tolerates()
	what := "copies"
	if r.Replicas == 0 {
		what = "pieces"
	}
	switch {
	case t == 0:
		line("survives", "no loss: there is one copy; corruption is detected on read but cannot be repaired")
	case p.Spread == SpreadNone:
		line("survives", "corruption of up to %d %s of a block, but not the loss of a node (%s may share one node)", t, what, what)
	case p.Spread == SpreadNode:
		line("survives", "the loss of any %d storage %s at once", t, plural(t, "node", "nodes"))
	case p.Spread == SpreadZone:
		line("survives", "the loss of any %d storage %s at once, or of one whole zone", t, plural(t, "node", "nodes"))
	}
	switch p.Spread {
	case SpreadNone:
		line("placement", "spread none: %s may share nodes (fine for one node)", what)
	case SpreadNode:
		line("placement", "spread node: each of the %d %s on a different node; needs %d storage %s",
			r.Pieces(), what, r.Pieces(), plural(r.Pieces(), "node", "nodes"))
	case SpreadZone:
		line("placement", "spread zone: each of the %d %s on a different node, spread evenly over zones; needs %d storage nodes in at least %d zones",
			r.Pieces(), what, r.Pieces(), minZones(r))
	}
	if p.Cipher == CipherNone {
		line("encryption", "none: blocks are stored in the clear")
	} else {
		line("encryption", "%s: blocks are encrypted (and authenticated) before they are split and stored", p.Cipher)
	}
	if p.Keep == 0 {
		line("versioning", "keep 0: no old versions are kept (no rollback)")
	} else {
		line("versioning", "keep %d: the last %d %s of the volume's chunk map are kept for rollback",
			p.Keep, p.Keep, plural(p.Keep, "version", "versions"))
	}
	return b.String()
}

func overheadGiB(x float64) string {
	s := strconv.FormatFloat(x, 'f', 2, 64)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s + "GiB"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
