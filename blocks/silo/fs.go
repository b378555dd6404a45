package silo

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"unsafe"
)

// FS is the file system the silo works through. The default is the
// operating system's; tests substitute one that injects errors and crashes.
// Names are full paths. Implementations must be safe for concurrent use.
type FS interface {
	// MkdirAll creates dir and its parents.
	MkdirAll(dir string) error
	// Lock takes an exclusive lock on dir (a lock file inside it), failing
	// at once if another holder has it. Closing the result releases it.
	Lock(dir string) (io.Closer, error)
	// List returns the names (not paths) of the entries of dir.
	List(dir string) ([]string, error)
	// Open opens an existing file for reading and writing.
	Open(name string) (File, error)
	// Create creates a new, empty file; it fails if name exists.
	Create(name string) (File, error)
	// Remove removes a file. It is durable once SyncDir returns.
	Remove(name string) error
	// SyncDir makes creations and removals in dir durable.
	SyncDir(dir string) error
}

// File is an open file of an FS. ReadAt and WriteAt may be called
// concurrently with each other; the other methods are not called
// concurrently with WriteAt on the same file.
type File interface {
	io.ReaderAt
	io.WriterAt
	// Sync makes the written data durable (fdatasync).
	Sync() error
	// Truncate sets the file's size.
	Truncate(size int64) error
	// Size returns the file's size.
	Size() (int64, error)
	Close() error
}

// osFS is the real file system.
type osFS struct{}

func (osFS) MkdirAll(dir string) error { return os.MkdirAll(dir, 0o755) }

type flockFile struct{ f *os.File }

func (l flockFile) Close() error {
	_ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	return l.f.Close()
}

func (osFS) Lock(dir string) (io.Closer, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("directory is locked by another open silo (flock %s): %w", filepath.Join(dir, "LOCK"), err)
		}
		return nil, err
	}
	return flockFile{f}, nil
}

func (osFS) List(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	return names, nil
}

func (osFS) Open(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return newOSFile(f), nil
}

func (osFS) Create(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	return newOSFile(f), nil
}

func (osFS) Remove(name string) error { return os.Remove(name) }

func (osFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// osFile is an os.File whose Sync is fdatasync.
type osFile struct {
	*os.File
	fd int
}

func newOSFile(f *os.File) *osFile { return &osFile{File: f, fd: int(f.Fd())} }

func (f *osFile) Sync() error {
	for {
		err := syscall.Fdatasync(f.fd)
		if err != syscall.EINTR {
			if err != nil {
				return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}

// Allocate reserves [0, size) of the file with fallocate (mode 0: the
// file grows to size; the new range reads as zeros). It returns
// errAllocUnsupported where the file system has no fallocate.
func (f *osFile) Allocate(size int64) error {
	for {
		err := syscall.Fallocate(f.fd, 0, 0, size)
		switch {
		case err == nil:
			return nil
		case err == syscall.EINTR:
			continue
		case err == syscall.EOPNOTSUPP || err == syscall.ENOSYS:
			return errAllocUnsupported
		default:
			return &os.PathError{Op: "fallocate", Path: f.Name(), Err: err}
		}
	}
}

// writeStarter is implemented by Files that can start writing a range of
// their dirty pages to the disk without waiting for it (the silo's
// WriteBehind). It makes nothing durable.
type writeStarter interface {
	StartWrite(off, n int64) error
}

// StartWrite implements writeStarter with sync_file_range(2) and
// SYNC_FILE_RANGE_WRITE alone: the kernel submits the range's dirty pages
// (those not already being written) and returns; the fdatasync of the next
// Sync waits for them and flushes the device's cache.
func (f *osFile) StartWrite(off, n int64) error {
	for {
		err := syscall.SyncFileRange(f.fd, off, n, syncFileRangeWrite)
		if err != syscall.EINTR {
			if err != nil {
				return &os.PathError{Op: "sync_file_range", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}

// syncFileRangeWrite is SYNC_FILE_RANGE_WRITE of <linux/fs.h>.
const syncFileRangeWrite = 0x2

// splitReader is implemented by Files that read into two buffers with
// one system call: len(a) bytes at off into a, then len(b) more into b.
// The silo reads a record's header into spare room and its payload
// straight into the caller's buffer with it (see readSplit), which spares
// a copy of every piece read.
type splitReader interface {
	ReadSplitAt(a, b []byte, off int64) (int, error)
}

// ReadSplitAt implements splitReader with preadv. It returns io.EOF when
// the file ends first, like ReadAt. a and b must not be empty.
func (f *osFile) ReadSplitAt(a, b []byte, off int64) (int, error) {
	var iov [2]syscall.Iovec
	iov[0].Base, iov[1].Base = &a[0], &b[0]
	iov[0].SetLen(len(a))
	iov[1].SetLen(len(b))
	want := len(a) + len(b)
	done := 0
	for done < want {
		n, _, e := syscall.Syscall6(syscall.SYS_PREADV, uintptr(f.fd), uintptr(unsafe.Pointer(&iov[0])), 2,
			uintptr(off), uintptr(uint64(off)>>(strconv.IntSize-1)>>1), 0)
		switch {
		case e == syscall.EINTR:
			continue
		case e != 0:
			return done, &os.PathError{Op: "preadv", Path: f.Name(), Err: e}
		case n == 0:
			return done, io.EOF
		}
		// A short read (rare for a regular file): skip what was read.
		done += int(n)
		off += int64(n)
		if done >= want {
			break
		}
		if done < len(a) {
			iov[0].Base = &a[done]
			iov[0].SetLen(len(a) - done)
		} else {
			iov[0].Base = &b[done-len(a)]
			iov[0].SetLen(want - done)
			iov[1].SetLen(0)
		}
	}
	return done, nil
}

// allocator is implemented by Files that can reserve space without writing
// it (osFile). Others are preallocated with written zeros.
// Free reports the bytes an unprivileged writer may still allocate on
// the file system holding dir (statfs: available blocks).
func (osFS) Free(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

type allocator interface {
	Allocate(size int64) error
}

var errAllocUnsupported = errors.New("fallocate not supported")

func (f *osFile) Size() (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// mapErr wraps file-system errors in the blocks sentinels callers test:
// ENOSPC (and EDQUOT) become blocks.ErrNoSpace.
func mapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("silo: %s: %w (%v)", op, errNoSpace, err)
	}
	return fmt.Errorf("silo: %s: %w", op, err)
}
