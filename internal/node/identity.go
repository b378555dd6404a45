package node

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// identity is a node's record of itself, kept in DATA/node.json so that a
// restarted node comes back as the same member with the same raft address.
//
//	{"format":1,"name":"node-1a2b3c","replica_id":1,"raft_address":"127.0.0.1:10812","created":"..."}
type identity struct {
	Format      int       `json:"format"`
	Name        string    `json:"name"`
	ReplicaID   uint64    `json:"replica_id"`
	RaftAddress string    `json:"raft_address"`
	Created     time.Time `json:"created"`
}

const identityFile = "node.json"

// loadIdentity reads the node's identity, creating it on first start with
// the given defaults.
// A cluster node gets a random replica ID (unique in the cluster with
// overwhelming odds); a cluster of one is replica 1.
func loadIdentity(dir, raftAddr string, clustered bool) (identity, bool, error) {
	path := filepath.Join(dir, identityFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		var suffix [3]byte
		_, _ = rand.Read(suffix[:])
		id := identity{Format: 1, Name: fmt.Sprintf("node-%x", suffix), ReplicaID: 1, RaftAddress: raftAddr, Created: time.Now().UTC()}
		if clustered {
			var r [8]byte
			_, _ = rand.Read(r[:])
			id.ReplicaID = binary.BigEndian.Uint64(r[:])>>1 | 1<<32
		}
		b, _ := json.MarshalIndent(id, "", "  ")
		if err := writeFileSync(path, append(b, '\n'), 0o644); err != nil {
			return identity{}, false, err
		}
		return id, true, nil
	}
	if err != nil {
		return identity{}, false, fmt.Errorf("node: %w", err)
	}
	var id identity
	if err := json.Unmarshal(data, &id); err != nil || id.Format != 1 || id.ReplicaID == 0 || id.RaftAddress == "" {
		return identity{}, false, fmt.Errorf("node: %s is damaged (%v); it records this node's identity, restore it from a backup", path, err)
	}
	return id, false, nil
}

// loadMasterKey reads DATA/keys/master, the key that wraps every volume's
// key, creating it on first start. The file never leaves this directory;
// losing it makes encrypted volumes unreadable.
func loadMasterKey(dir string) ([]byte, error) {
	kdir := filepath.Join(dir, "keys")
	path := filepath.Join(kdir, "master")
	key, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(kdir, 0o700); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
		if err := writeFileSync(path, key, 0o600); err != nil {
			return nil, err
		}
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("node: %s holds %d bytes, want 32: it is damaged; restore it from a backup", path, len(key))
	}
	return key, nil
}

// writeFileSync writes a file durably: a temporary file, fsync, rename,
// fsync of the directory.
func writeFileSync(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("node: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("node: sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("node: sync dir: %w", err)
	}
	return nil
}
