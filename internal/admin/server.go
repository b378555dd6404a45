package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"cairn/blocks"
	"cairn/policies"
	"cairn/volume"
)

// Backend is what the admin API administers: a node. Errors wrap the
// sentinels of volume, blocks and policies; CodeOf maps them.
type Backend interface {
	Status(ctx context.Context) (Status, error)
	ListVolumes(ctx context.Context) ([]VolumeInfo, error)
	CreateVolume(ctx context.Context, req CreateRequest) (VolumeInfo, error)
	InspectVolume(ctx context.Context, name string) (VolumeInfo, error)
	ResizeVolume(ctx context.Context, name string, size int64) (VolumeInfo, error)
	DeleteVolume(ctx context.Context, name string) error
	SnapshotVolume(ctx context.Context, name, snapshot string) (VolumeInfo, error)
	CloneVolume(ctx context.Context, snapshot, name string) (VolumeInfo, error)
	// ImportVolume writes size bytes from r at offset 0 and flushes.
	ImportVolume(ctx context.Context, name string, r io.Reader, size int64) (VolumeInfo, error)
	// ExportVolume writes the whole volume to w.
	ExportVolume(ctx context.Context, name string, w io.Writer) error
	CollectGarbage(ctx context.Context) (GCResult, error)
	// Scrub runs an anti-entropy pass now and returns its counts.
	Scrub(ctx context.Context) (RepairStatus, error)
}

// CodeOf classifies an error for the wire: the one table that maps Cairn's
// sentinel errors to admin error codes and HTTP statuses.
func CodeOf(err error) (code string, status int) {
	switch {
	case errors.Is(err, volume.ErrNotFound), errors.Is(err, blocks.ErrNotFound):
		return CodeNotFound, http.StatusNotFound
	case errors.Is(err, volume.ErrExists):
		return CodeExists, http.StatusConflict
	case errors.Is(err, volume.ErrAttached), errors.Is(err, volume.ErrFenced):
		return CodeAttached, http.StatusConflict
	case errors.Is(err, volume.ErrReadOnly):
		return CodeReadOnly, http.StatusForbidden
	case errors.Is(err, volume.ErrInvalid), errors.Is(err, volume.ErrOutOfRange), errors.Is(err, policies.ErrInvalid):
		return CodeInvalid, http.StatusBadRequest
	case errors.Is(err, blocks.ErrNoSpace):
		return CodeNoSpace, http.StatusInsufficientStorage
	default:
		return CodeInternal, http.StatusInternalServerError
	}
}

// Server serves the admin API.
type Server struct {
	backend Backend
	log     *slog.Logger
	http    *http.Server
}

// NewServer returns a server for backend.
func NewServer(backend Backend, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{backend: backend, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", s.status)
	mux.HandleFunc("GET /v1/volumes", s.list)
	mux.HandleFunc("POST /v1/volumes", s.create)
	mux.HandleFunc("GET /v1/volumes/{name}", s.inspect)
	mux.HandleFunc("DELETE /v1/volumes/{name}", s.delete)
	mux.HandleFunc("POST /v1/volumes/{name}/resize", s.resize)
	mux.HandleFunc("POST /v1/volumes/{name}/snapshot", s.snapshot)
	mux.HandleFunc("POST /v1/volumes/{name}/clone", s.clone)
	mux.HandleFunc("PUT /v1/volumes/{name}/data", s.importData)
	mux.HandleFunc("GET /v1/volumes/{name}/data", s.exportData)
	mux.HandleFunc("POST /v1/gc", s.gc)
	mux.HandleFunc("POST /v1/scrub", s.scrub)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return s
}

// ListenUnix listens on the Unix socket at path, replacing a stale socket
// file left by a killed node (but not a live one).
func ListenUnix(path string) (net.Listener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("admin: another node is already serving %s", path)
	}
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin: listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("admin: %w", err)
	}
	return l, nil
}

// Serve serves on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	err := s.http.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops the server, letting requests in flight finish until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.http.Shutdown(ctx) }

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code, status := CodeOf(err)
	if status == http.StatusInternalServerError {
		s.log.Error("admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(Error{Code: code, Message: err.Error()})
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// decode reads a JSON body of at most 4 MiB (policies are small) into v.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 4<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("admin: bad request body: %v: %w", err, volume.ErrInvalid)
	}
	return nil
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	st, err := s.backend.Status(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	reply(w, st)
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	vs, err := s.backend.ListVolumes(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if vs == nil {
		vs = []VolumeInfo{}
	}
	reply(w, vs)
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	var req CreateRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	info, err := s.backend.CreateVolume(r.Context(), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	reply(w, info)
}

func (s *Server) inspect(w http.ResponseWriter, r *http.Request) {
	info, err := s.backend.InspectVolume(r.Context(), r.PathValue("name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	reply(w, info)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	if err := s.backend.DeleteVolume(r.Context(), r.PathValue("name")); err != nil {
		s.fail(w, r, err)
		return
	}
	reply(w, struct{}{})
}

func (s *Server) resize(w http.ResponseWriter, r *http.Request) {
	var req ResizeRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	info, err := s.backend.ResizeVolume(r.Context(), r.PathValue("name"), req.Size)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	reply(w, info)
}

func (s *Server) snapshot(w http.ResponseWriter, r *http.Request) {
	var req NameRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	info, err := s.backend.SnapshotVolume(r.Context(), r.PathValue("name"), req.Name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	reply(w, info)
}

func (s *Server) clone(w http.ResponseWriter, r *http.Request) {
	var req NameRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	info, err := s.backend.CloneVolume(r.Context(), r.PathValue("name"), req.Name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	reply(w, info)
}

func (s *Server) importData(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength < 0 {
		s.fail(w, r, fmt.Errorf("admin: import needs a Content-Length: %w", volume.ErrInvalid))
		return
	}
	info, err := s.backend.ImportVolume(r.Context(), r.PathValue("name"), r.Body, r.ContentLength)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	reply(w, info)
}

func (s *Server) exportData(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	info, err := s.backend.InspectVolume(r.Context(), name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(info.Size, 10))
	if err := s.backend.ExportVolume(r.Context(), name, w); err != nil {
		// The status line is gone; the short body tells the client.
		s.log.Error("export failed", "volume", name, "err", err)
	}
}

func (s *Server) gc(w http.ResponseWriter, r *http.Request) {
	res, err := s.backend.CollectGarbage(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	reply(w, res)
}

func (s *Server) scrub(w http.ResponseWriter, r *http.Request) {
	res, err := s.backend.Scrub(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	reply(w, res)
}
