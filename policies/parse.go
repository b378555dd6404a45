package policies

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// The policy file format (TOML; see DESIGN.md "Policies"). Every key is
// optional; an omitted key takes the default shown.
//
//	name        = "database"        # default: the file's base name without extension
//	block_size  = "4KiB"            # power of two, 512B .. 4MiB; or a whole number of bytes
//	compression = "none"            # none | lz4
//	dedup       = false
//	[redundancy]
//	replicas    = 1                 # 1..16 full copies; or: data = K, parity = M
//	[encryption]
//	cipher      = "none"            # none | aes-256-gcm | xchacha20-poly1305
//	[versioning]
//	keep        = 0                 # 0..1000 chunk-map versions kept for rollback
//	[placement]
//	spread      = "node"            # none | node | zone
//
// Parsing is strict: unknown keys and tables, wrong types, decimal (SI)
// units, out-of-range values and impossible combinations are all refused.

// Limits on policy values.
const (
	MaxReplicas = 16   // replicas = 1..MaxReplicas
	MaxPieces   = 32   // data + parity <= MaxPieces
	MaxKeep     = 1000 // keep = 0..MaxKeep
	MaxNameLen  = 64   // bytes in a policy name
)

// Load reads the policy file at path and parses it with [Parse], using path
// as the file name in messages. A file that cannot be read gives the
// os error (not ErrInvalid).
func Load(path string) (Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Policy{}, fmt.Errorf("policies: %w", err)
	}
	return Parse(path, data)
}

// Parse reads a policy written in TOML (the format above). filename is used
// in messages and, when the file has no name key, gives the policy its name
// (base name without extension). On success the Policy is valid (Validate
// returns nil). Otherwise the error joins one *Problem per thing wrong, each
// naming the file and line and saying what to write instead; every one
// wraps ErrInvalid. Parse never panics, whatever data holds.
func Parse(filename string, data []byte) (Policy, error) {
	s := newSpec()
	s.p = defaults()
	d := decoder{s: s}
	if !d.decode(data) {
		return Policy{}, joinProblems(filename, d.problems)
	}
	if !s.has["name"] {
		base := filepath.Base(filename)
		s.p.Name = strings.TrimSuffix(base, filepath.Ext(base))
		if filename == "" {
			s.p.Name = ""
		}
	}
	if !s.has["redundancy.replicas"] && !s.has["redundancy.data"] && !s.has["redundancy.parity"] {
		s.replicas = 1
		s.has["redundancy.replicas"] = true
	}
	ps := append(d.problems, s.validate()...)
	if len(ps) > 0 {
		return Policy{}, joinProblems(filename, ps)
	}
	return s.policy(), nil
}

// defaults returns the values of omitted keys (redundancy aside).
func defaults() Policy {
	return Policy{
		BlockSize:   4 * KiB,
		Compression: CompressionNone,
		Cipher:      CipherNone,
		Spread:      SpreadNode,
	}
}

// Default returns the embedded policy of `cairn serve` (one node): 4KiB
// blocks, one replica, spread none, no compression, no encryption, no
// dedup, keep 0, named "default".
func Default() Policy {
	return Policy{
		Name:        "default",
		BlockSize:   4 * KiB,
		Compression: CompressionNone,
		Redundancy:  Redundancy{Replicas: 1},
		Cipher:      CipherNone,
		Spread:      SpreadNone,
	}
}

// Validate reports whether p obeys every rule Parse enforces (for policies
// built in code). Problems carry no file or line; the error joins them and
// each wraps ErrInvalid.
func (p Policy) Validate() error {
	s := newSpec()
	s.p = p
	s.replicas, s.data, s.parity = int64(p.Redundancy.Replicas), int64(p.Redundancy.Data), int64(p.Redundancy.Parity)
	s.keep = int64(p.Keep)
	s.has["name"] = true
	s.has["block_size"] = true
	s.has["redundancy.replicas"] = p.Redundancy.Replicas != 0
	s.has["redundancy.data"] = p.Redundancy.Data != 0
	s.has["redundancy.parity"] = p.Redundancy.Parity != 0
	return joinProblems("", s.validate())
}

// spec is a policy being checked: the values, and for each dotted key
// whether it was written, on which line, and whether it was already
// reported as wrong (so that combination checks stay quiet about it).
type spec struct {
	p                            Policy            // its Redundancy and Keep are ignored: the int64s below hold them
	replicas, data, parity, keep int64             // as written, so huge values are reported, not truncated
	text                         map[string]string // the value as written, for messages
	line                         map[string]int
	has, bad                     map[string]bool
}

func newSpec() *spec {
	return &spec{
		text: map[string]string{},
		line: map[string]int{},
		has:  map[string]bool{},
		bad:  map[string]bool{},
	}
}

// policy returns the checked policy. Call only after validate found nothing.
func (s *spec) policy() Policy {
	p := s.p
	p.Redundancy = Redundancy{Replicas: int(s.replicas), Data: int(s.data), Parity: int(s.parity)}
	p.Keep = int(s.keep)
	return p
}

// ok reports whether key may take part in checks: not already reported.
func (s *spec) ok(key string) bool { return !s.bad[key] }

// validate checks values and combinations; it reports nothing already in bad.
func (s *spec) validate() []Problem {
	var ps []Problem
	add := func(key, format string, args ...any) {
		ps = append(ps, Problem{Line: s.line[key], Msg: fmt.Sprintf(format, args...)})
	}

	if s.ok("name") {
		if msg := nameProblem(s.p.Name); msg != "" {
			if !s.has["name"] {
				msg = fmt.Sprintf("the policy has no name line, and its file name gives %q, which %s; add a line such as name = \"database\"", s.p.Name, msg)
				if s.p.Name == "" {
					msg = `the policy has no name; add a line such as name = "database"`
				}
			} else {
				msg = fmt.Sprintf("name %q %s; write e.g. name = \"database\"", s.p.Name, msg)
			}
			add("name", "%s", msg)
			s.bad["name"] = true
		}
	}

	bsText := s.text["block_size"]
	if bsText == "" {
		bsText = strconv.Quote(s.p.BlockSize.String())
	}
	if s.ok("block_size") {
		const fix = `write a power of two from 512B to 4MiB, e.g. "4KiB"`
		what := ""
		switch bs := s.p.BlockSize; {
		case bs < MinBlockSize:
			what = "is below 512B"
		case bs > MaxBlockSize:
			what = "is above 4MiB"
		case !isPowerOfTwo(bs):
			what = "is not a power of two"
		}
		if what != "" {
			add("block_size", "block_size %s %s; %s", bsText, what, fix)
			s.bad["block_size"] = true
		}
	}
	if s.ok("compression") && !s.p.Compression.Valid() {
		add("compression", "%s", enumProblem("compression", compressions, string(s.p.Compression)))
	}
	if s.ok("encryption.cipher") && !s.p.Cipher.Valid() {
		add("encryption.cipher", "%s", enumProblem("cipher", ciphers, string(s.p.Cipher)))
	}
	if s.ok("placement.spread") && !s.p.Spread.Valid() {
		add("placement.spread", "%s", enumProblem("spread", spreads, string(s.p.Spread)))
		s.bad["placement.spread"] = true
	}
	if s.ok("versioning.keep") && (s.keep < 0 || s.keep > MaxKeep) {
		add("versioning.keep", "keep = %d is out of range; write 0 (no old versions) to %d, e.g. keep = 10", s.keep, MaxKeep)
	}

	// Redundancy: exactly one form, each number in range.
	const (
		rk = "redundancy.replicas"
		dk = "redundancy.data"
		pk = "redundancy.parity"
	)
	hasR, hasD, hasP := s.has[rk], s.has[dk], s.has[pk]
	allOK := s.ok(rk) && s.ok(dk) && s.ok(pk)
	redundancyOK := false
	switch {
	case !hasR && !hasD && !hasP:
		add(rk, "no redundancy is set; write replicas = 1 or more, or data = K and parity = M")
	case hasR && (hasD || hasP):
		if allOK {
			add(rk, "replicas cannot be combined with data and parity; write either replicas = N (N full copies) or data = K and parity = M (erasure coding), not both")
		}
	case hasR:
		if s.ok(rk) {
			if s.replicas < 1 || s.replicas > MaxReplicas {
				add(rk, "replicas = %d is out of range; write 1 to %d copies, e.g. replicas = 3", s.replicas, MaxReplicas)
			} else {
				redundancyOK = true
			}
		}
	case hasD && !hasP:
		if s.ok(dk) {
			add(dk, "data = %d needs parity; add parity = 2 (how many lost pieces to survive), or write replicas = N instead", s.data)
		}
	case hasP && !hasD:
		if s.ok(pk) {
			add(pk, "parity = %d needs data; add data = 4 (how many pieces each block is cut into), or write replicas = N instead", s.parity)
		}
	default: // data and parity
		good := allOK
		if s.ok(dk) && s.data < 1 {
			add(dk, "data = %d is out of range; write 1 or more data pieces, e.g. data = 4", s.data)
			good = false
		}
		if s.ok(pk) && s.parity < 1 {
			add(pk, "parity = %d is out of range; write 1 or more parity pieces, e.g. parity = 2 (for no redundancy at all, write replicas = 1 instead)", s.parity)
			good = false
		}
		if good && s.data+s.parity > MaxPieces {
			add(dk, "data = %d and parity = %d make %d pieces, more than %d; write fewer, e.g. data = 8 and parity = 3", s.data, s.parity, s.data+s.parity, MaxPieces)
			good = false
		}
		if good && s.ok("block_size") && s.p.BlockSize < MinErasureBlockSize {
			key := "block_size"
			if s.line[key] == 0 {
				key = dk
			}
			add(key, "block_size %s is too small for erasure coding: data = %d would cut each block into pieces of %d bytes; write block_size = \"4KiB\" or larger, or use replicas instead",
				bsText, s.data, (int64(s.p.BlockSize)+s.data-1)/s.data)
			good = false
		}
		redundancyOK = good
	}

	if redundancyOK && s.ok("placement.spread") && s.p.Spread == SpreadZone {
		r := Redundancy{Replicas: int(s.replicas), Data: int(s.data), Parity: int(s.parity)}
		if r.Tolerates() < 1 {
			add("placement.spread", `spread = "zone" keeps a block safe from the loss of a zone only with 2 or more replicas; write replicas = 2 or more, or spread = "node"`)
		}
	}
	return ps
}

// nameProblem returns why name is not a valid policy name ("" if it is),
// as a phrase: "is empty", "may hold only ...".
func nameProblem(name string) string {
	if name == "" {
		return "is empty"
	}
	if len(name) > MaxNameLen {
		return fmt.Sprintf("is longer than %d bytes", MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return "may hold only letters, digits, '.', '_' and '-', and must start with a letter or digit"
		}
	}
	return ""
}

// decoder turns TOML into a spec, reporting syntax, unknown keys and types.
type decoder struct {
	s        *spec
	md       toml.MetaData
	problems []Problem
}

// schema lists the keys of each table ("" is the top level), in the order
// messages name them.
var schema = map[string][]string{
	"":           {"name", "block_size", "compression", "dedup", "redundancy", "encryption", "versioning", "placement"},
	"redundancy": {"replicas", "data", "parity"},
	"encryption": {"cipher"},
	"versioning": {"keep"},
	"placement":  {"spread"},
}

// examples shows, for each leaf key, a line to write.
var examples = map[string]string{
	"name":                `name = "database"`,
	"block_size":          `block_size = "4KiB"`,
	"compression":         `compression = "lz4"`,
	"dedup":               `dedup = true`,
	"redundancy.replicas": `replicas = 3`,
	"redundancy.data":     `data = 4`,
	"redundancy.parity":   `parity = 2`,
	"encryption.cipher":   `cipher = "aes-256-gcm"`,
	"versioning.keep":     `keep = 10`,
	"placement.spread":    `spread = "zone"`,
}

// entry is one key of a table with its value and line.
type entry struct {
	name string // the key's last part
	key  string // dotted path from the top
	v    any
	line int
	prim toml.Primitive
}

// probe captures a value and, by failing, makes the decoder report the
// value's line (MetaData has no public key positions).
type probe struct{ v any }

var errProbe = errors.New("probe")

func (p *probe) UnmarshalTOML(v any) error { p.v = v; return errProbe }

func (d *decoder) add(line int, format string, args ...any) {
	d.problems = append(d.problems, Problem{Line: line, Msg: fmt.Sprintf(format, args...)})
}

// decode fills d.s; it returns false when the TOML itself is malformed.
func (d *decoder) decode(data []byte) bool {
	var top map[string]toml.Primitive
	md, err := toml.Decode(string(data), &top)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			d.add(pe.Position.Line, "this is not valid TOML: %s; see the examples in examples/policies/", strings.TrimSuffix(pe.Message, "."))
		} else {
			d.add(0, "this is not valid TOML: %v", err)
		}
		return false
	}
	d.md = md
	d.table("", top)
	return true
}

// entries probes every key of a table, in line order.
func (d *decoder) entries(prefix string, m map[string]toml.Primitive) []entry {
	es := make([]entry, 0, len(m))
	for name, prim := range m {
		var p probe
		line := 0
		var pe toml.ParseError
		if err := d.md.PrimitiveDecode(prim, &p); errors.As(err, &pe) {
			line = pe.Position.Line
		}
		key := name
		if prefix != "" {
			key = prefix + "." + name
		}
		es = append(es, entry{name: name, key: key, v: p.v, line: line, prim: prim})
	}
	slices.SortFunc(es, func(a, b entry) int {
		return cmp.Or(cmp.Compare(a.line, b.line), cmp.Compare(a.key, b.key))
	})
	return es
}

// table decodes the keys of one table (prefix "" for the top level).
func (d *decoder) table(prefix string, m map[string]toml.Primitive) {
	for _, e := range d.entries(prefix, m) {
		if !slices.Contains(schema[prefix], e.name) {
			d.unknown(prefix, e)
			continue
		}
		if _, isTable := schema[e.key]; isTable {
			if _, ok := e.v.(map[string]any); !ok {
				d.add(e.line, "%s is %s, but it must be a table; write [%s] on a line of its own, with its keys below it, e.g. %s",
					e.name, describe(e.v), e.name, examples[e.key+"."+schema[e.key][0]])
				continue
			}
			var sub map[string]toml.Primitive
			if err := d.md.PrimitiveDecode(e.prim, &sub); err != nil {
				d.add(e.line, "[%s] could not be read: %v", e.name, err)
				continue
			}
			d.table(e.key, sub)
			continue
		}
		d.leaf(e)
	}
}

// unknown reports a key that is not in the schema, with a suggestion.
func (d *decoder) unknown(prefix string, e entry) {
	where := "at the top of the file"
	if prefix != "" {
		where = "in [" + prefix + "]"
	}
	for table, keys := range schema {
		if table != prefix && slices.Contains(keys, e.name) {
			if table == "" {
				d.add(e.line, "%s does not belong %s; move it above the first [table] line", e.name, where)
			} else {
				d.add(e.line, "%s does not belong %s; move it below a [%s] line", e.name, where, table)
			}
			return
		}
	}
	for _, k := range schema[prefix] {
		if editDistance(strings.ToLower(e.name), k) <= 2 {
			d.add(e.line, "unknown key %q %s; did you mean %s?", e.name, where, k)
			return
		}
	}
	known := make([]string, 0, len(schema[prefix]))
	for _, k := range schema[prefix] {
		if _, isTable := schema[joinKey(prefix, k)]; isTable {
			k = "[" + k + "]"
		}
		known = append(known, k)
	}
	d.add(e.line, "unknown key %q %s; the keys there are %s", e.name, where, andList(known))
}

func joinKey(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// leaf decodes one value into the spec, checking its type.
func (d *decoder) leaf(e entry) {
	s := d.s
	s.has[e.key] = true
	s.line[e.key] = e.line
	bad := func(want string) {
		d.add(e.line, "%s is %s; %s, e.g. %s", e.name, describe(e.v), want, examples[e.key])
		s.bad[e.key] = true
	}
	switch e.key {
	case "name":
		if v, ok := e.v.(string); ok {
			s.p.Name = v
		} else {
			bad("write a name in quotes")
		}
	case "block_size":
		switch v := e.v.(type) {
		case string:
			s.text[e.key] = strconv.Quote(v)
			size, problem := parseSize(v)
			if problem != "" {
				d.add(e.line, "block_size %q %s", v, problem)
				s.bad[e.key] = true
				return
			}
			s.p.BlockSize = size
		case int64:
			s.text[e.key] = strconv.FormatInt(v, 10)
			if v < 0 || v > 1<<62 {
				d.add(e.line, `block_size %d is out of range; write a power of two from 512B to 4MiB, e.g. "4KiB"`, v)
				s.bad[e.key] = true
				return
			}
			s.p.BlockSize = Size(v)
		default:
			bad("write a size in quotes with its unit")
		}
	case "compression", "encryption.cipher", "placement.spread":
		v, ok := e.v.(string)
		if !ok {
			bad("write one of the names in quotes")
			return
		}
		switch e.key {
		case "compression":
			s.p.Compression = Compression(v)
		case "encryption.cipher":
			s.p.Cipher = Cipher(v)
		default:
			s.p.Spread = Spread(v)
		}
	case "dedup":
		if v, ok := e.v.(bool); ok {
			s.p.Dedup = v
		} else {
			bad("write true or false, without quotes")
		}
	case "redundancy.replicas", "redundancy.data", "redundancy.parity", "versioning.keep":
		v, ok := e.v.(int64)
		if !ok {
			if str, isStr := e.v.(string); isStr {
				if _, err := strconv.ParseInt(strings.TrimSpace(str), 10, 64); err == nil {
					d.add(e.line, "%s is a string; write the number without quotes: %s = %s", e.name, e.name, strings.TrimSpace(str))
					s.bad[e.key] = true
					return
				}
			}
			bad("write a whole number")
			return
		}
		switch e.key {
		case "redundancy.replicas":
			s.replicas = v
		case "redundancy.data":
			s.data = v
		case "redundancy.parity":
			s.parity = v
		default:
			s.keep = v
		}
	}
}

// describe names the TOML type of v for messages: "a string", ...
func describe(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("a string (%q)", v)
	case int64:
		return fmt.Sprintf("a number (%d)", v)
	case float64:
		return "a decimal number"
	case bool:
		return fmt.Sprintf("a boolean (%t)", v)
	case time.Time:
		return "a date/time"
	case map[string]any:
		return "a table"
	case []map[string]any:
		return "an array of tables"
	case []any:
		return "an array"
	}
	if v == nil {
		return "missing"
	}
	return "a date/time" // toml's local date and time types
}

// andList joins words: "a, b and c".
func andList(words []string) string {
	if len(words) <= 1 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " and " + words[len(words)-1]
}

// editDistance is the Levenshtein distance between a and b, in bytes; it
// gives up (returns a large number) on long inputs.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
