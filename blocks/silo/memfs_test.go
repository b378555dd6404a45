package silo

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
)

// memFS is an in-memory FS that remembers, per file, what was synced and
// what was only written, and per directory which entries were synced, so
// that Crash can return the disk a power cut would leave. It can inject
// ENOSPC (a byte budget) and errors on writes and syncs.
type memFS struct {
	mu      sync.Mutex
	names   map[string]*inode // current entries (full paths)
	durable map[string]*inode // entries as of the last SyncDir
	locks   map[string]bool
	// space, when >= 0, is how many more bytes files may grow by.
	space int64
	// writeErr and syncErr, when set, fail WriteAt and Sync.
	writeErr, syncErr error
}

type inode struct {
	mu     sync.Mutex
	data   []byte
	synced []byte
}

func newMemFS() *memFS {
	return &memFS{names: map[string]*inode{}, durable: map[string]*inode{}, locks: map[string]bool{}, space: -1}
}

// Crash returns the file system a power cut would leave: synced directory
// entries with their synced bytes. With rnd non-nil, each file also keeps
// a random prefix of its unsynced appended bytes, some of them zeroed, as a
// torn tail, and unsynced overwrites of synced bytes (appends into a
// preallocated segment) reach the disk page by page, each 4 KiB page at
// random, some of them zeroed (torn).
func (m *memFS) Crash(rnd *rand.Rand) *memFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := newMemFS()
	done := map[*inode]*inode{}
	for name, ino := range m.durable {
		c := done[ino]
		if c == nil {
			ino.mu.Lock()
			data := append([]byte(nil), ino.synced...)
			if rnd != nil {
				tearPages(rnd, data, ino.data)
			}
			if rnd != nil && len(ino.data) > len(ino.synced) && string(ino.data[:len(ino.synced)]) == string(ino.synced) {
				extra := ino.data[len(ino.synced):]
				keep := rnd.IntN(len(extra) + 1)
				tail := append([]byte(nil), extra[:keep]...)
				if keep > 0 && rnd.IntN(2) == 0 {
					a := rnd.IntN(keep)
					b := a + rnd.IntN(keep-a+1)
					clear(tail[a:b])
				}
				data = append(data, tail...)
			}
			ino.mu.Unlock()
			c = &inode{data: data, synced: append([]byte(nil), data...)}
			done[ino] = c
		}
		n.names[name] = c
		n.durable[name] = c
	}
	return n
}

// files returns the current file names (sorted) and inodes.
func (m *memFS) files() ([]string, map[string]*inode) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var names []string
	for n := range m.names {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, m.names
}

func (m *memFS) MkdirAll(dir string) error { return nil }

type memLock struct {
	m   *memFS
	dir string
}

func (l memLock) Close() error {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	delete(l.m.locks, l.dir)
	return nil
}

func (m *memFS) Lock(dir string) (io.Closer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.locks[dir] {
		return nil, fmt.Errorf("memfs: %s is locked", dir)
	}
	m.locks[dir] = true
	return memLock{m, dir}, nil
}

func (m *memFS) List(dir string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for name := range m.names {
		if filepath.Dir(name) == dir {
			out = append(out, filepath.Base(name))
		}
	}
	return out, nil
}

func (m *memFS) Open(name string) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ino := m.names[name]
	if ino == nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: os.ErrNotExist}
	}
	return &memFile{m: m, ino: ino, name: name}, nil
}

func (m *memFS) Create(name string) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.names[name] != nil {
		return nil, &os.PathError{Op: "create", Path: name, Err: os.ErrExist}
	}
	ino := &inode{}
	m.names[name] = ino
	return &memFile{m: m, ino: ino, name: name}, nil
}

func (m *memFS) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	ino := m.names[name]
	if ino == nil {
		return &os.PathError{Op: "remove", Path: name, Err: os.ErrNotExist}
	}
	delete(m.names, name)
	if m.space >= 0 {
		// Its space comes back (the silo closes a file before removing
		// it, so no handle keeps it).
		ino.mu.Lock()
		m.space += int64(len(ino.data))
		ino.mu.Unlock()
	}
	return nil
}

func (m *memFS) SyncDir(dir string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.syncErr != nil {
		return m.syncErr
	}
	m.durable = make(map[string]*inode, len(m.names))
	for n, ino := range m.names {
		m.durable[n] = ino
	}
	return nil
}

func (m *memFS) setSpace(n int64) {
	m.mu.Lock()
	m.space = n
	m.mu.Unlock()
}

type memFile struct {
	m    *memFS
	ino  *inode
	name string
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.ino.mu.Lock()
	defer f.ino.mu.Unlock()
	if off >= int64(len(f.ino.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.ino.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	f.m.mu.Lock()
	if f.m.writeErr != nil {
		err := f.m.writeErr
		f.m.mu.Unlock()
		return 0, &os.PathError{Op: "write", Path: f.name, Err: err}
	}
	f.ino.mu.Lock()
	defer f.ino.mu.Unlock()
	grow := off + int64(len(p)) - int64(len(f.ino.data))
	var err error
	if grow > 0 && f.m.space >= 0 {
		if grow > f.m.space {
			// Write what fits, as a real file system would.
			fit := int64(len(p)) - (grow - f.m.space)
			p = p[:max(fit, 0)]
			err = &os.PathError{Op: "write", Path: f.name, Err: syscall.ENOSPC}
			grow = max(off+int64(len(p))-int64(len(f.ino.data)), 0)
		}
		f.m.space -= grow
	}
	f.m.mu.Unlock()
	if end := off + int64(len(p)); end > int64(len(f.ino.data)) {
		f.ino.data = append(f.ino.data, make([]byte, end-int64(len(f.ino.data)))...)
	}
	copy(f.ino.data[off:], p)
	return len(p), err
}

func (f *memFile) Sync() error {
	f.m.mu.Lock()
	err := f.m.syncErr
	f.m.mu.Unlock()
	if err != nil {
		return &os.PathError{Op: "fdatasync", Path: f.name, Err: err}
	}
	f.ino.mu.Lock()
	f.ino.synced = append(f.ino.synced[:0], f.ino.data...)
	f.ino.mu.Unlock()
	return nil
}

func (f *memFile) Truncate(size int64) error {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	f.ino.mu.Lock()
	defer f.ino.mu.Unlock()
	if size < int64(len(f.ino.data)) {
		if f.m.space >= 0 {
			f.m.space += int64(len(f.ino.data)) - size
		}
		f.ino.data = f.ino.data[:size]
	} else {
		f.ino.data = append(f.ino.data, make([]byte, size-int64(len(f.ino.data)))...)
	}
	return nil
}

func (f *memFile) Size() (int64, error) {
	f.ino.mu.Lock()
	defer f.ino.mu.Unlock()
	return int64(len(f.ino.data)), nil
}

func (f *memFile) Close() error { return nil }

// tearPages copies to synced, page by page at random, the pages of data
// (the unsynced contents) that differ from it, some of them only in part.
func tearPages(rnd *rand.Rand, synced, data []byte) {
	const page = 4096
	for p := 0; p < len(synced) && p < len(data); p += page {
		end := min(p+page, len(synced), len(data))
		if string(synced[p:end]) == string(data[p:end]) || rnd.IntN(2) == 0 {
			continue
		}
		if rnd.IntN(4) == 0 {
			end = p + rnd.IntN(end-p+1) // a torn page: only its start arrived
		}
		copy(synced[p:end], data[p:end])
	}
}
