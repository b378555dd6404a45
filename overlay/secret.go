package overlay

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrInvalidSecret: a cluster secret that is not SecretSize bytes, or a
// printed secret that is not "cairn1-" followed by base64url.
var ErrInvalidSecret = errors.New("overlay: invalid cluster secret")

// ErrSecretMismatch: the secret given to a node differs from the one its
// data directory already holds (the node belongs to another cluster).
var ErrSecretMismatch = errors.New("overlay: cluster secret differs from the one in the data directory")

const (
	// SecretSize is the length of a cluster secret in bytes. memberlist
	// uses it as an AES-256-GCM key that encrypts and authenticates every
	// gossip packet and stream.
	SecretSize = 32
	// SecretPrefix starts the printed form of a secret; the digit is the
	// format version.
	SecretPrefix = "cairn1-"
	// SecretFile is the name of the file, in a node's data directory, that
	// holds the cluster secret in its printed form (mode 0600).
	SecretFile = "cluster-secret"
)

// NewSecret returns a fresh random cluster secret of SecretSize bytes.
func NewSecret() ([]byte, error) {
	s := make([]byte, SecretSize)
	if _, err := rand.Read(s); err != nil {
		return nil, fmt.Errorf("overlay: new secret: %w", err)
	}
	return s, nil
}

// EncodeSecret returns the printable form of a secret: SecretPrefix
// followed by the unpadded base64url encoding of its bytes (50 characters
// for a 32-byte secret).
func EncodeSecret(secret []byte) string {
	return SecretPrefix + base64.RawURLEncoding.EncodeToString(secret)
}

// ParseSecret parses the printable form written by [EncodeSecret].
// Surrounding white space is ignored. Errors wrap [ErrInvalidSecret]; the
// error never echoes the input.
func ParseSecret(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, SecretPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: it must start with %q (print one with the first node's data directory)", ErrInvalidSecret, SecretPrefix)
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("%w: not base64url after %q", ErrInvalidSecret, SecretPrefix)
	}
	if len(b) != SecretSize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrInvalidSecret, len(b), SecretSize)
	}
	return b, nil
}

// LoadOrCreateSecret returns the cluster secret for the node whose data
// directory is dir, keeping it in dir/SecretFile (mode 0600):
//
//   - given == "" and no file: a new secret is created and stored; created
//     is true (the first node of a new cluster).
//   - given == "" and a file: the stored secret (a restarting node).
//   - given != "" (the printed form, for a joining node) and no file: the
//     given secret is stored and returned.
//   - given != "" and a file: they must be equal, else [ErrSecretMismatch].
//
// A stored file readable or writable by group or others is refused (as
// ssh refuses a private key): chmod it to 0600. The file is written to a
// temporary name, synced and linked into place, so a crash never leaves a torn
// secret. dir must exist. Errors wrap [ErrInvalidSecret],
// [ErrSecretMismatch] or the file system's error.
func LoadOrCreateSecret(dir string, given string) (secret []byte, created bool, err error) {
	var want []byte
	if given != "" {
		if want, err = ParseSecret(given); err != nil {
			return nil, false, err
		}
	}
	path := filepath.Join(dir, SecretFile)
	stored, err := readSecretFile(path)
	switch {
	case err == nil:
		if want != nil && subtle.ConstantTimeCompare(want, stored) != 1 {
			return nil, false, fmt.Errorf("%w: %s (this data directory belongs to another cluster; use another directory or the secret it holds)", ErrSecretMismatch, path)
		}
		return stored, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, err
	}
	created = want == nil
	if created {
		if want, err = NewSecret(); err != nil {
			return nil, false, err
		}
	}
	if err := writeSecretFile(dir, path, want); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Another process stored one first: use it (or refuse it).
			return LoadOrCreateSecret(dir, given)
		}
		return nil, false, err
	}
	return want, created, nil
}

func readSecretFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("overlay: read secret: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("overlay: read secret: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("overlay: secret file %s has mode %v, which others can read: run chmod 600 %s", path, st.Mode().Perm(), path)
	}
	buf := make([]byte, 256)
	n, err := f.Read(buf)
	if err != nil {
		return nil, fmt.Errorf("overlay: read secret %s: %w", path, err)
	}
	s, err := ParseSecret(string(buf[:n]))
	if err != nil {
		return nil, fmt.Errorf("overlay: secret file %s: %w", path, err)
	}
	return s, nil
}

func writeSecretFile(dir, path string, secret []byte) error {
	tmp, err := os.CreateTemp(dir, SecretFile+".tmp-*")
	if err != nil {
		return fmt.Errorf("overlay: write secret: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	var b bytes.Buffer
	b.WriteString(EncodeSecret(secret))
	b.WriteByte('\n')
	// CreateTemp makes the file 0600; Chmod guards against an odd umask.
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("overlay: write secret: %w", err)
	}
	if _, err := tmp.Write(b.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("overlay: write secret: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("overlay: write secret: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("overlay: write secret: %w", err)
	}
	// Link, not Rename: a secret that another process stored meanwhile is
	// never replaced (the caller then reads that one).
	if err := os.Link(tmp.Name(), path); err != nil {
		return fmt.Errorf("overlay: write secret: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("overlay: write secret: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("overlay: write secret: sync %s: %w", dir, err)
	}
	return nil
}
