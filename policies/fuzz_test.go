package policies

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, pattern := range []string{"testdata/*.toml", "../examples/policies/*.toml"} {
		files, _ := filepath.Glob(pattern)
		for _, file := range files {
			if data, err := os.ReadFile(file); err == nil {
				f.Add(data)
			}
		}
	}
	for _, p := range validPolicies()[:20] {
		f.Add(p.Format())
	}
	f.Add([]byte("redundancy = { data = 4, parity = 2 }\nblock_size = 1048576\n"))
	f.Add([]byte("\"name\" = \"q\"\n'block_size' = \"8KiB\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("fuzz.toml", data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "fuzz.toml") {
					t.Fatalf("problem without file name: %q", line)
				}
			}
			return
		}
		checkInvariants(t, p)
		q, err := Parse("other.toml", p.Format())
		if err != nil || q != p {
			t.Fatalf("round trip of %+v: %+v, %v\n%s", p, q, err, p.Format())
		}
		_ = p.String()
		_ = p.Describe()
		_ = p.Check(Facts{StorageNodes: 3, Zones: 2})
	})
}

// checkInvariants fails t unless p is a valid policy, checked directly
// rather than through Validate.
func checkInvariants(t *testing.T, p Policy) {
	t.Helper()
	if err := p.Validate(); err != nil {
		t.Fatalf("accepted policy fails Validate: %v", err)
	}
	if p.BlockSize < MinBlockSize || p.BlockSize > MaxBlockSize || p.BlockSize&(p.BlockSize-1) != 0 {
		t.Fatalf("block size %d", p.BlockSize)
	}
	r := p.Redundancy
	replicated := r.Replicas >= 1 && r.Replicas <= MaxReplicas && r.Data == 0 && r.Parity == 0
	coded := r.Replicas == 0 && r.Data >= 1 && r.Parity >= 1 && r.Data+r.Parity <= MaxPieces && p.BlockSize >= MinErasureBlockSize
	if replicated == coded {
		t.Fatalf("redundancy %+v", r)
	}
	if !p.Compression.Valid() || !p.Cipher.Valid() || !p.Spread.Valid() {
		t.Fatalf("enums %+v", p)
	}
	if p.Keep < 0 || p.Keep > MaxKeep {
		t.Fatalf("keep %d", p.Keep)
	}
	if p.Spread == SpreadZone && r.Tolerates() < 1 {
		t.Fatalf("zone spread with no tolerance: %+v", p)
	}
	if p.Name == "" || len(p.Name) > MaxNameLen {
		t.Fatalf("name %q", p.Name)
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"4KiB", "4 KiB", "4096", "512B", "1MiB", "4KB", "-1", "1.5MiB", "", "99999999999TiB", "0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseSize(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("not ErrInvalid: %v", err)
			}
			return
		}
		if v < 0 || v > 1<<62 {
			t.Fatalf("ParseSize(%q) = %d", s, v)
		}
		back, err := ParseSize(v.String())
		if err != nil || back != v {
			t.Fatalf("ParseSize(%q) = %d; String %q reads back as %d, %v", s, v, v.String(), back, err)
		}
	})
}
