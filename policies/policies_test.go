package policies

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestGoldenErrors parses every testdata/*.toml, each of which is invalid,
// and compares the error text with testdata/*.err.
func TestGoldenErrors(t *testing.T) {
	files, err := filepath.Glob("testdata/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, file := range files {
		name := filepath.Base(file)
		t.Run(strings.TrimSuffix(name, ".toml"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			p, err := Parse(name, data)
			if err == nil {
				t.Fatalf("Parse accepted %s: %v", name, p)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, name+":") {
					t.Errorf("problem line does not name the file: %q", line)
				}
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(file, ".toml") + ".err"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("Parse(%s) error:\n%s\nwant:\n%s", name, got, want)
			}
		})
	}
}

func TestParseBlockSizeMessage(t *testing.T) {
	// The exact message from the design brief.
	_, err := Parse("database.toml", []byte("name = \"database\"\n\n\nblock_size = \"3KiB\"\n"))
	want := `database.toml:4: block_size "3KiB" is not a power of two; write a power of two from 512B to 4MiB, e.g. "4KiB"`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	var pr *Problem
	if !errors.As(err, &pr) || pr.Line != 4 || pr.File != "database.toml" {
		t.Fatalf("errors.As Problem: %+v", pr)
	}
}

func TestParseDefaults(t *testing.T) {
	p, err := Parse("some/dir/scratch.toml", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Policy{
		Name:        "scratch",
		BlockSize:   4 * KiB,
		Compression: CompressionNone,
		Redundancy:  Redundancy{Replicas: 1},
		Cipher:      CipherNone,
		Spread:      SpreadNode,
	}
	if p != want {
		t.Fatalf("got %+v\nwant %+v", p, want)
	}
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		src  string
		want func(*Policy)
	}{
		{`block_size = "4 KiB"`, func(p *Policy) { p.BlockSize = 4 * KiB }},
		{`block_size = "4096"`, func(p *Policy) { p.BlockSize = 4 * KiB }},
		{`block_size = 4096`, func(p *Policy) { p.BlockSize = 4 * KiB }},
		{`block_size = "512B"`, func(p *Policy) { p.BlockSize = 512 }},
		{`block_size = "512 B"`, func(p *Policy) { p.BlockSize = 512 }},
		{`block_size = "1MiB"`, func(p *Policy) { p.BlockSize = MiB }},
		{`block_size = "4MiB"`, func(p *Policy) { p.BlockSize = 4 * MiB }},
		{`block_size = "2048KiB"`, func(p *Policy) { p.BlockSize = 2 * MiB }},
		{"redundancy.replicas = 16", func(p *Policy) { p.Redundancy = Redundancy{Replicas: 16} }},
		{"redundancy = { data = 28, parity = 4 }", func(p *Policy) { p.Redundancy = Redundancy{Data: 28, Parity: 4} }},
		{"[redundancy]\ndata = 1\nparity = 1", func(p *Policy) { p.Redundancy = Redundancy{Data: 1, Parity: 1} }},
		{"[versioning]\nkeep = 1000", func(p *Policy) { p.Keep = 1000 }},
		{"[encryption]\ncipher = \"xchacha20-poly1305\"", func(p *Policy) { p.Cipher = CipherXChaCha }},
		{"[redundancy]\nreplicas = 2\n[placement]\nspread = \"zone\"", func(p *Policy) {
			p.Redundancy.Replicas = 2
			p.Spread = SpreadZone
		}},
		{`name = "db-01.prod_a"`, func(p *Policy) { p.Name = "db-01.prod_a" }},
		{"dedup = true\ncompression = \"lz4\"", func(p *Policy) { p.Dedup, p.Compression = true, CompressionLZ4 }},
		{"[redundancy]\n[encryption]\n[versioning]\n[placement]", func(*Policy) {}},
	}
	for _, tt := range tests {
		want := Policy{
			Name: "t", BlockSize: 4 * KiB, Compression: CompressionNone,
			Redundancy: Redundancy{Replicas: 1}, Cipher: CipherNone, Spread: SpreadNode,
		}
		tt.want(&want)
		got, err := Parse("t.toml", []byte(tt.src))
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.src, err)
			continue
		}
		if got != want {
			t.Errorf("Parse(%q) = %+v, want %+v", tt.src, got, want)
		}
	}
}

func TestParseNameFromFile(t *testing.T) {
	tests := []struct{ file, want string }{
		{"my policy.toml", `my policy.toml: the policy has no name line, and its file name gives "my policy", which may hold only letters, digits, '.', '_' and '-', and must start with a letter or digit; add a line such as name = "database"`},
		{"", `policies: the policy has no name; add a line such as name = "database"`},
		{".toml", `.toml: the policy has no name; add a line such as name = "database"`},
	}
	for _, tt := range tests {
		_, err := Parse(tt.file, []byte("dedup = false\n"))
		if err == nil || err.Error() != tt.want {
			t.Errorf("Parse(%q):\n got %v\nwant %s", tt.file, err, tt.want)
		}
	}
	// A name line makes the file name irrelevant.
	if p, err := Parse("my policy.toml", []byte(`name = "fine"`)); err != nil || p.Name != "fine" {
		t.Errorf("got %v, %v", p, err)
	}
}

func TestLoad(t *testing.T) {
	p, err := Load("../examples/policies/media.toml")
	if err != nil {
		t.Fatal(err)
	}
	if p.Redundancy != (Redundancy{Data: 4, Parity: 2}) || p.BlockSize != MiB {
		t.Errorf("media: %v", p)
	}
	_, err = Load("testdata/does-not-exist.toml")
	if err == nil || !errors.Is(err, os.ErrNotExist) || errors.Is(err, ErrInvalid) {
		t.Errorf("Load of a missing file: %v", err)
	}
	_, err = Load("testdata/keep-negative.toml")
	if err == nil || !strings.HasPrefix(err.Error(), "testdata/keep-negative.toml:2: ") {
		t.Errorf("Load names the path: %v", err)
	}
}

// TestExamples parses every file in examples/policies, and checks the
// properties the brief asks of each, and the Describe output (golden).
func TestExamples(t *testing.T) {
	files, err := filepath.Glob("../examples/policies/*.toml")
	if err != nil || len(files) < 4 {
		t.Fatalf("examples: %v %v", files, err)
	}
	got := map[string]Policy{}
	for _, file := range files {
		p, err := Load(file)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		got[p.Name] = p
		q, err := Parse("x.toml", p.Format())
		if err != nil || q != p {
			t.Errorf("%s: round trip gave %v, %v", file, q, err)
		}
		golden := filepath.Join("testdata", "describe", p.Name+".txt")
		out := p.Describe()
		if *update {
			os.MkdirAll(filepath.Dir(golden), 0o755)
			if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Errorf("%v (run go test -update)", err)
		} else if out != string(want) {
			t.Errorf("%s Describe:\n%s\nwant:\n%s", file, out, want)
		}
	}
	want := map[string]Policy{
		"database": {Name: "database", BlockSize: 4 * KiB, Compression: CompressionNone, Redundancy: Redundancy{Replicas: 3},
			Cipher: CipherAES256, Spread: SpreadZone},
		"files": {Name: "files", BlockSize: 64 * KiB, Compression: CompressionLZ4, Dedup: true, Redundancy: Redundancy{Replicas: 2},
			Cipher: CipherNone, Keep: 10, Spread: SpreadNode},
		"media": {Name: "media", BlockSize: MiB, Compression: CompressionLZ4, Redundancy: Redundancy{Data: 4, Parity: 2},
			Cipher: CipherNone, Spread: SpreadNode},
		"default": Default(),
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("example %s = %+v, want %+v", name, got[name], w)
		}
	}
}

func TestDefault(t *testing.T) {
	d := Default()
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := d.Check(Facts{StorageNodes: 1, Zones: 1}); err != nil {
		t.Fatal(err)
	}
	want := "default: 4KiB blocks, 1 replica, not spread, no encryption, no compression, no dedup, keep 0"
	if d.String() != want {
		t.Errorf("String() = %q, want %q", d.String(), want)
	}
}

func TestString(t *testing.T) {
	p := Policy{Name: "database", BlockSize: 4 * KiB, Compression: CompressionNone, Redundancy: Redundancy{Replicas: 3},
		Cipher: CipherAES256, Spread: SpreadZone}
	want := "database: 4KiB blocks, 3 replicas spread by zone, aes-256-gcm, no compression, no dedup, keep 0"
	if p.String() != want {
		t.Errorf("got %q\nwant %q", p.String(), want)
	}
	p = Policy{Name: "media", BlockSize: MiB, Compression: CompressionLZ4, Dedup: true, Redundancy: Redundancy{Data: 4, Parity: 2},
		Cipher: CipherNone, Spread: SpreadNode, Keep: 3}
	want = "media: 1MiB blocks, 4+2 erasure coding spread by node, no encryption, lz4, dedup, keep 3"
	if p.String() != want {
		t.Errorf("got %q\nwant %q", p.String(), want)
	}
}

func TestOverhead(t *testing.T) {
	tests := []struct {
		r    Redundancy
		want string
	}{
		{Redundancy{Replicas: 3}, "3.0x"},
		{Redundancy{Replicas: 1}, "1.0x"},
		{Redundancy{Data: 4, Parity: 2}, "1.5x"},
		{Redundancy{Data: 3, Parity: 2}, "1.67x"},
		{Redundancy{Data: 10, Parity: 4}, "1.4x"},
	}
	for _, tt := range tests {
		if got := overheadText(tt.r.Overhead()); got != tt.want {
			t.Errorf("%v: %s, want %s", tt.r, got, tt.want)
		}
	}
}

// validPolicies enumerates a spread of valid policies.
func validPolicies() []Policy {
	var ps []Policy
	reds := []Redundancy{{Replicas: 1}, {Replicas: 2}, {Replicas: 3}, {Replicas: 16}, {Data: 4, Parity: 2}, {Data: 1, Parity: 1}, {Data: 28, Parity: 4}}
	for _, bs := range []Size{512, 4 * KiB, 64 * KiB, MiB, 4 * MiB} {
		for _, r := range reds {
			if r.Replicas == 0 && bs < MinErasureBlockSize {
				continue
			}
			for _, sp := range spreads {
				if sp == SpreadZone && r.Tolerates() == 0 {
					continue
				}
				for i, c := range ciphers {
					ps = append(ps, Policy{
						Name: "p" + bs.String(), BlockSize: bs, Redundancy: r, Spread: sp, Cipher: c,
						Compression: compressions[i%2], Dedup: i%2 == 0, Keep: []int{0, 1, 1000}[i],
					})
				}
			}
		}
	}
	return ps
}

func TestRoundTrip(t *testing.T) {
	for _, p := range validPolicies() {
		if err := p.Validate(); err != nil {
			t.Fatalf("%v: %v", p, err)
		}
		text := p.Format()
		q, err := Parse("other-name.toml", text)
		if err != nil {
			t.Fatalf("Parse(Format(%v)): %v\n%s", p, err, text)
		}
		if q != p {
			t.Fatalf("round trip: got %+v, want %+v\n%s", q, p, text)
		}
		if string(q.Format()) != string(text) {
			t.Fatalf("Format is not canonical:\n%s\n%s", text, q.Format())
		}
	}
}

func TestFormat(t *testing.T) {
	p := Policy{Name: "media", BlockSize: MiB, Compression: CompressionLZ4, Redundancy: Redundancy{Data: 4, Parity: 2},
		Cipher: CipherNone, Spread: SpreadNode}
	want := `name        = "media"
block_size  = "1MiB"
compression = "lz4"
dedup       = false

[redundancy]
data     = 4
parity   = 2

[encryption]
cipher = "none"

[versioning]
keep = 0

[placement]
spread = "node"
`
	if got := string(p.Format()); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestValidate(t *testing.T) {
	good := Default()
	tests := []struct {
		mod  func(*Policy)
		want string
	}{
		{func(p *Policy) { p.Redundancy = Redundancy{} }, "policies: no redundancy is set; write replicas = 1 or more, or data = K and parity = M"},
		{func(p *Policy) { p.Redundancy = Redundancy{Replicas: 2, Data: 2, Parity: 1} }, "policies: replicas cannot be combined with data and parity; write either replicas = N (N full copies) or data = K and parity = M (erasure coding), not both"},
		{func(p *Policy) { p.BlockSize = 0 }, `policies: block_size "0B" is below 512B; write a power of two from 512B to 4MiB, e.g. "4KiB"`},
		{func(p *Policy) { p.Cipher = "" }, `policies: cipher "" is not known; write "none", "aes-256-gcm" or "xchacha20-poly1305"`},
		{func(p *Policy) { p.Name = "" }, `policies: name "" is empty; write e.g. name = "database"`},
		{func(p *Policy) { p.Keep = -3 }, "policies: keep = -3 is out of range; write 0 (no old versions) to 1000, e.g. keep = 10"},
	}
	for _, tt := range tests {
		p := good
		tt.mod(&p)
		err := p.Validate()
		if err == nil || err.Error() != tt.want || !errors.Is(err, ErrInvalid) {
			t.Errorf("Validate:\n got %v\nwant %s", err, tt.want)
		}
	}
}

func TestCheck(t *testing.T) {
	base := Policy{Name: "db", BlockSize: 4 * KiB, Compression: CompressionNone, Cipher: CipherNone}
	pol := func(r Redundancy, s Spread) Policy { p := base; p.Redundancy, p.Spread = r, s; return p }
	rep := func(n int) Redundancy { return Redundancy{Replicas: n} }
	ec := func(k, m int) Redundancy { return Redundancy{Data: k, Parity: m} }
	tests := []struct {
		p    Policy
		f    Facts
		want string // "" for no error
	}{
		{pol(rep(1), SpreadNone), Facts{1, 1}, ""},
		{pol(rep(5), SpreadNone), Facts{1, 1}, ""},
		{pol(ec(4, 2), SpreadNone), Facts{1, 1}, ""},
		{pol(rep(3), SpreadNone), Facts{0, 0}, `policies: policy "db": this cluster has no storage nodes; start a storage node (cairn node) before creating volumes`},
		{pol(rep(3), SpreadNode), Facts{3, 1}, ""},
		{pol(rep(5), SpreadNode), Facts{3, 1}, `policies: policy "db": replicas = 5 needs 5 storage nodes with spread = "node"; this cluster has 3: lower replicas, or write spread = "none" to let copies share nodes (this survives disk corruption, not node loss)`},
		{pol(ec(4, 2), SpreadNode), Facts{6, 1}, ""},
		{pol(ec(4, 2), SpreadNode), Facts{5, 1}, `policies: policy "db": data = 4 and parity = 2 need 6 storage nodes with spread = "node"; this cluster has 5: use fewer data or parity pieces, or write spread = "none" to let pieces share nodes (this survives disk corruption, not node loss)`},
		{pol(rep(3), SpreadZone), Facts{3, 2}, ""},
		{pol(rep(3), SpreadZone), Facts{3, 1}, `policies: policy "db": replicas = 3 needs at least 2 zones with spread = "zone", so that losing one zone loses at most 2 of the 3 copies; this cluster has 1: add zones, or write spread = "node"`},
		{pol(rep(2), SpreadZone), Facts{2, 2}, ""},
		{pol(ec(4, 2), SpreadZone), Facts{6, 3}, ""},
		{pol(ec(4, 2), SpreadZone), Facts{9, 2}, `policies: policy "db": data = 4 and parity = 2 need at least 3 zones with spread = "zone", so that losing one zone loses at most 2 of the 6 pieces; this cluster has 2: add zones, or write spread = "node"`},
		{pol(ec(10, 2), SpreadZone), Facts{12, 5}, `policies: policy "db": data = 10 and parity = 2 need at least 6 zones with spread = "zone", so that losing one zone loses at most 2 of the 12 pieces; this cluster has 5: add zones, or write spread = "node"`},
		{pol(ec(8, 4), SpreadZone), Facts{12, 3}, ""},
		{pol(rep(4), SpreadZone), Facts{3, 1}, `policies: policy "db": replicas = 4 needs 4 storage nodes with spread = "zone"; this cluster has 3: lower replicas, or write spread = "none" to let copies share nodes (this survives disk corruption, not node loss)
policies: policy "db": replicas = 4 needs at least 2 zones with spread = "zone", so that losing one zone loses at most 3 of the 4 copies; this cluster has 1: add zones, or write spread = "node"`},
		{pol(rep(0), SpreadNone), Facts{3, 1}, "policies: no redundancy is set; write replicas = 1 or more, or data = K and parity = M"},
	}
	for i, tt := range tests {
		err := tt.p.Check(tt.f)
		got := ""
		if err != nil {
			got = err.Error()
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%d: not ErrInvalid: %v", i, err)
			}
		}
		if got != tt.want {
			t.Errorf("%d: %v on %+v:\n got %s\nwant %s", i, tt.p, tt.f, got, tt.want)
		}
	}
}

func TestMinZones(t *testing.T) {
	tests := []struct {
		r    Redundancy
		want int
	}{
		{Redundancy{Replicas: 2}, 2}, {Redundancy{Replicas: 3}, 2}, {Redundancy{Replicas: 5}, 2},
		{Redundancy{Data: 4, Parity: 2}, 3}, {Redundancy{Data: 10, Parity: 2}, 6}, {Redundancy{Data: 8, Parity: 4}, 3},
		{Redundancy{Data: 2, Parity: 1}, 3}, {Redundancy{Data: 1, Parity: 1}, 2},
	}
	for _, tt := range tests {
		z := minZones(tt.r)
		if z != tt.want {
			t.Errorf("minZones(%v) = %d, want %d", tt.r, z, tt.want)
		}
		// The rule: with pieces spread evenly over z zones, the fullest zone
		// holds no more than Tolerates pieces; with z-1 zones it would.
		full := func(z int) int { return (tt.r.Pieces() + z - 1) / z }
		if full(z) > tt.r.Tolerates() || (z > 2 && full(z-1) <= tt.r.Tolerates()) {
			t.Errorf("minZones(%v) = %d is not the least", tt.r, z)
		}
	}
}

func TestSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		err  string
	}{
		{"4KiB", 4096, ""}, {"4 KiB", 4096, ""}, {" 4096 ", 4096, ""}, {"512B", 512, ""}, {"1MiB", MiB, ""},
		{"3GiB", 3 * GiB, ""}, {"2TiB", 2 * TiB, ""}, {"0", 0, ""},
		{"4KB", 0, `policies: invalid policy: size "4KB" uses the decimal unit KB (powers of 1000); write KiB (powers of 1024), e.g. "4KiB"`},
		{"1mb", 0, `policies: invalid policy: size "1mb" uses the decimal unit mb (powers of 1000); write MiB (powers of 1024), e.g. "1MiB"`},
		{"4k", 0, `policies: invalid policy: size "4k" uses the unit "k", which is ambiguous; write KiB, e.g. "4KiB"`},
		{"4KIB", 0, `policies: invalid policy: size "4KIB" spells the unit "KIB"; write KiB, e.g. "4KiB"`},
		{"4bytes", 0, `policies: invalid policy: size "4bytes" spells the unit "bytes"; write B, e.g. "4B"`},
		{"", 0, `policies: invalid policy: size "" is empty; write a size such as "4KiB"`},
		{"-1", 0, `policies: invalid policy: size "-1" is negative; write a size such as "4KiB"`},
		{"KiB", 0, `policies: invalid policy: size "KiB" does not start with a number; write a size such as "4KiB"`},
		{"1.5MiB", 0, `policies: invalid policy: size "1.5MiB" is not a whole number; write a whole number of bytes, KiB or MiB, such as "1536B" or "4KiB"`},
		{"99999999999999999999", 0, `policies: invalid policy: size "99999999999999999999" is too large; write a size such as "4KiB"`},
		{"9999999TiB", 0, `policies: invalid policy: size "9999999TiB" is too large; write a size such as "4KiB"`},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		msg := ""
		if err != nil {
			msg = err.Error()
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%q: not ErrInvalid", tt.in)
			}
		}
		if got != tt.want || msg != tt.err {
			t.Errorf("ParseSize(%q) = %d, %q; want %d, %q", tt.in, got, msg, tt.want, tt.err)
		}
	}
	for s, want := range map[Size]string{0: "0B", 512: "512B", 1536: "1536B", 4096: "4KiB", 3 * MiB: "3MiB", GiB: "1GiB", -2: "-2B"} {
		if s.String() != want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(s), s.String(), want)
		}
	}
	var s Size
	if err := s.UnmarshalText([]byte("64KiB")); err != nil || s != 64*KiB {
		t.Errorf("UnmarshalText: %v %v", s, err)
	}
}

func TestEnumText(t *testing.T) {
	var c Cipher
	if err := c.UnmarshalText([]byte("xchacha20-poly1305")); err != nil || c != CipherXChaCha {
		t.Errorf("cipher: %v %v", c, err)
	}
	var sp Spread
	err := sp.UnmarshalText([]byte("rack"))
	if want := `policies: invalid policy: spread "rack" is not known; write "none", "node" or "zone"`; err == nil || err.Error() != want || !errors.Is(err, ErrInvalid) {
		t.Errorf("spread: %v", err)
	}
	var co Compression
	err = co.UnmarshalText([]byte("LZ4"))
	if want := `policies: invalid policy: compression "LZ4" is not spelled as Cairn expects; write compression = "lz4"`; err == nil || err.Error() != want {
		t.Errorf("compression: %v", err)
	}
	if b, _ := CipherAES256.MarshalText(); string(b) != "aes-256-gcm" {
		t.Errorf("MarshalText: %s", b)
	}
}
