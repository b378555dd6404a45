package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"

	"cairn/blocks"
	"cairn/volume"
)

// Client talks to a node's admin socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client of the node whose admin socket is at socket.
func NewClient(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}
	return &Client{socket: socket, http: &http.Client{Transport: tr}}
}

// codeErrors maps wire codes back to sentinels, so that callers of the
// client test errors as they would in-process.
var codeErrors = map[string]error{
	CodeNotFound: volume.ErrNotFound,
	CodeExists:   volume.ErrExists,
	CodeInvalid:  volume.ErrInvalid,
	CodeAttached: volume.ErrAttached,
	CodeReadOnly: volume.ErrReadOnly,
	CodeNoSpace:  blocks.ErrNoSpace,
}

// RemoteError is an error the node returned.
type RemoteError struct {
	Code    string
	Message string
}

func (e *RemoteError) Error() string { return e.Message }

// Unwrap lets errors.Is match the sentinel of the error's code.
func (e *RemoteError) Unwrap() error {
	return codeErrors[e.Code]
}

func (c *Client) do(ctx context.Context, method, path string, body io.Reader, size int64, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://cairn"+path, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.ContentLength = size
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || isRefused(err) {
			return fmt.Errorf("no Cairn node is running with its admin socket at %s (start one with `cairn serve`, or pass --data): %w", c.socket, err)
		}
		return fmt.Errorf("admin: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e Error
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e); err != nil {
			return fmt.Errorf("admin: %s %s: %s", method, path, resp.Status)
		}
		return &RemoteError{Code: e.Code, Message: e.Message}
	}
	if out == nil {
		return nil
	}
	if w, ok := out.(io.Writer); ok {
		_, err := io.Copy(w, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("admin: bad reply to %s %s: %w", method, path, err)
	}
	return nil
}

func isRefused(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func jsonBody(v any) (io.Reader, int64) {
	b, _ := json.Marshal(v)
	return bytes.NewReader(b), int64(len(b))
}

func volPath(name string, rest string) string { return "/v1/volumes/" + url.PathEscape(name) + rest }

// Status returns the node's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.do(ctx, "GET", "/v1/status", nil, 0, &st)
	return st, err
}

// ListVolumes lists the volumes.
func (c *Client) ListVolumes(ctx context.Context) ([]VolumeInfo, error) {
	var vs []VolumeInfo
	err := c.do(ctx, "GET", "/v1/volumes", nil, 0, &vs)
	return vs, err
}

// CreateVolume creates a volume.
func (c *Client) CreateVolume(ctx context.Context, req CreateRequest) (VolumeInfo, error) {
	var info VolumeInfo
	b, n := jsonBody(req)
	err := c.do(ctx, "POST", "/v1/volumes", b, n, &info)
	return info, err
}

// InspectVolume describes a volume.
func (c *Client) InspectVolume(ctx context.Context, name string) (VolumeInfo, error) {
	var info VolumeInfo
	err := c.do(ctx, "GET", volPath(name, ""), nil, 0, &info)
	return info, err
}

// ResizeVolume resizes a volume.
func (c *Client) ResizeVolume(ctx context.Context, name string, size int64) (VolumeInfo, error) {
	var info VolumeInfo
	b, n := jsonBody(ResizeRequest{Size: size})
	err := c.do(ctx, "POST", volPath(name, "/resize"), b, n, &info)
	return info, err
}

// DeleteVolume deletes a volume.
func (c *Client) DeleteVolume(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", volPath(name, ""), nil, 0, nil)
}

// SnapshotVolume snapshots name as snapshot.
func (c *Client) SnapshotVolume(ctx context.Context, name, snapshot string) (VolumeInfo, error) {
	var info VolumeInfo
	b, n := jsonBody(NameRequest{Name: snapshot})
	err := c.do(ctx, "POST", volPath(name, "/snapshot"), b, n, &info)
	return info, err
}

// CloneVolume makes a writable volume name from snapshot.
func (c *Client) CloneVolume(ctx context.Context, snapshot, name string) (VolumeInfo, error) {
	var info VolumeInfo
	b, n := jsonBody(NameRequest{Name: name})
	err := c.do(ctx, "POST", volPath(snapshot, "/clone"), b, n, &info)
	return info, err
}

// ImportVolume streams size bytes from r into the volume at offset 0.
func (c *Client) ImportVolume(ctx context.Context, name string, r io.Reader, size int64) (VolumeInfo, error) {
	var info VolumeInfo
	err := c.do(ctx, "PUT", volPath(name, "/data"), r, size, &info)
	return info, err
}

// ExportVolume streams the volume's bytes to w.
func (c *Client) ExportVolume(ctx context.Context, name string, w io.Writer) error {
	return c.do(ctx, "GET", volPath(name, "/data"), nil, 0, w)
}

// CollectGarbage runs a garbage collection on the node.
func (c *Client) CollectGarbage(ctx context.Context) (GCResult, error) {
	var res GCResult
	err := c.do(ctx, "POST", "/v1/gc", nil, 0, &res)
	return res, err
}

// Scrub runs an anti-entropy pass on the node and returns its counts.
func (c *Client) Scrub(ctx context.Context) (RepairStatus, error) {
	var res RepairStatus
	err := c.do(ctx, "POST", "/v1/scrub", nil, 0, &res)
	return res, err
}
