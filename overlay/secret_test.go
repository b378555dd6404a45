package overlay

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSecretRoundTrip(t *testing.T) {
	s, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != SecretSize {
		t.Fatalf("NewSecret: %d bytes", len(s))
	}
	s2, _ := NewSecret()
	if bytes.Equal(s, s2) {
		t.Fatal("two NewSecret calls returned the same secret")
	}
	enc := EncodeSecret(s)
	if !strings.HasPrefix(enc, SecretPrefix) || len(enc) != len(SecretPrefix)+43 {
		t.Fatalf("EncodeSecret: %q", enc)
	}
	got, err := ParseSecret("  " + enc + "\n")
	if err != nil || !bytes.Equal(got, s) {
		t.Fatalf("ParseSecret: %x, %v", got, err)
	}
}

func TestParseSecretErrors(t *testing.T) {
	good := EncodeSecret(make([]byte, SecretSize))
	for _, tc := range []struct{ name, in string }{
		{"empty", ""},
		{"no prefix", good[len(SecretPrefix):]},
		{"other version", "cairn2-" + good[len(SecretPrefix):]},
		{"not base64url", SecretPrefix + strings.Repeat("+", 43)},
		{"padded", good + "="},
		{"short", EncodeSecret(make([]byte, 16))},
		{"long", EncodeSecret(make([]byte, 33))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseSecret(tc.in); !errors.Is(err, ErrInvalidSecret) {
				t.Fatalf("ParseSecret(%q): %v, want ErrInvalidSecret", tc.in, err)
			}
		})
	}
}

func FuzzParseSecret(f *testing.F) {
	f.Add(EncodeSecret(make([]byte, SecretSize)))
	f.Add(SecretPrefix)
	f.Add("cairn1-!!")
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseSecret(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidSecret) {
				t.Fatalf("error does not wrap ErrInvalidSecret: %v", err)
			}
			return
		}
		if len(b) != SecretSize {
			t.Fatalf("parsed %d bytes", len(b))
		}
		if b2, err := ParseSecret(EncodeSecret(b)); err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("re-parse: %x, %v", b2, err)
		}
	})
}

func TestLoadOrCreateSecret(t *testing.T) {
	first := t.TempDir()
	s, created, err := LoadOrCreateSecret(first, "")
	if err != nil || !created || len(s) != SecretSize {
		t.Fatalf("create: %d bytes, created=%v, %v", len(s), created, err)
	}
	path := filepath.Join(first, SecretFile)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode %v, want 0600", st.Mode().Perm())
	}
	if left, _ := filepath.Glob(filepath.Join(first, "*.tmp-*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}

	// Restart: the same secret, not created.
	again, created, err := LoadOrCreateSecret(first, "")
	if err != nil || created || !bytes.Equal(again, s) {
		t.Fatalf("reload: created=%v, equal=%v, %v", created, bytes.Equal(again, s), err)
	}
	// Restart with the secret given as well: fine.
	if got, _, err := LoadOrCreateSecret(first, EncodeSecret(s)); err != nil || !bytes.Equal(got, s) {
		t.Fatalf("reload with given: %v", err)
	}

	// A joiner is given the secret: stored, not created.
	joiner := t.TempDir()
	got, created, err := LoadOrCreateSecret(joiner, EncodeSecret(s))
	if err != nil || created || !bytes.Equal(got, s) {
		t.Fatalf("joiner: created=%v, %v", created, err)
	}
	if got, _, err := LoadOrCreateSecret(joiner, ""); err != nil || !bytes.Equal(got, s) {
		t.Fatalf("joiner restart: %v", err)
	}

	// Another cluster's secret is refused.
	other, _ := NewSecret()
	if _, _, err := LoadOrCreateSecret(joiner, EncodeSecret(other)); !errors.Is(err, ErrSecretMismatch) {
		t.Fatalf("other cluster's secret: %v, want ErrSecretMismatch", err)
	}
	// A malformed given secret is refused before touching the directory.
	empty := t.TempDir()
	if _, _, err := LoadOrCreateSecret(empty, "cairn1-short"); !errors.Is(err, ErrInvalidSecret) {
		t.Fatalf("malformed given: %v", err)
	}
	if _, err := os.Stat(filepath.Join(empty, SecretFile)); !os.IsNotExist(err) {
		t.Fatalf("malformed given secret created a file: %v", err)
	}

	// A file others can read is refused with advice.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateSecret(first, ""); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable secret file: %v", err)
	}
	// A corrupt file is an error, never silently replaced.
	if err := os.WriteFile(path, []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateSecret(first, ""); !errors.Is(err, ErrInvalidSecret) {
		t.Fatalf("corrupt secret file: %v", err)
	}
	// A missing directory is an error.
	if _, _, err := LoadOrCreateSecret(filepath.Join(first, "nope"), ""); err == nil {
		t.Fatal("missing directory: no error")
	}
}
