// Package admin is the local administration API of a running Cairn node:
// HTTP with JSON bodies over a Unix socket in the node's data directory
// (only local users who can reach the socket file can use it). The `cairn
// volume`, `cairn status` and `cairn gc` commands are its clients.
//
// # Wire format
//
//	GET    /v1/status                     -> Status
//	GET    /v1/volumes                    -> []VolumeInfo
//	POST   /v1/volumes         CreateRequest -> VolumeInfo
//	GET    /v1/volumes/{name}             -> VolumeInfo
//	DELETE /v1/volumes/{name}             -> {}
//	POST   /v1/volumes/{name}/resize   ResizeRequest -> VolumeInfo
//	POST   /v1/volumes/{name}/snapshot NameRequest   -> VolumeInfo (the snapshot)
//	POST   /v1/volumes/{name}/clone    NameRequest   -> VolumeInfo (the clone)
//	PUT    /v1/volumes/{name}/data     raw image body (import; Content-Length required) -> VolumeInfo
//	GET    /v1/volumes/{name}/data     -> raw image body (export)
//	POST   /v1/gc                         -> GCResult
//	POST   /v1/scrub                      -> RepairStatus (an anti-entropy pass, run now)
//
// Errors are an HTTP status with an Error body; Code is one of the Code*
// constants, so clients map them back to sentinel errors.
package admin

import (
	"time"
)

// SocketName is the admin socket's file name inside a node's data directory.
const SocketName = "admin.sock"

// Error codes carried in Error.Code.
const (
	CodeNotFound = "not_found"
	CodeExists   = "exists"
	CodeInvalid  = "invalid"
	CodeAttached = "attached"
	CodeReadOnly = "read_only"
	CodeNoSpace  = "no_space"
	CodeInternal = "internal"
)

// Error is the body of every non-2xx reply.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// VolumeInfo describes a volume.
type VolumeInfo struct {
	Name       string    `json:"name"`
	Size       int64     `json:"size"`
	BlockSize  int64     `json:"block_size"`
	Policy     string    `json:"policy"`      // one-line summary
	PolicyTOML string    `json:"policy_toml"` // canonical TOML
	ReadOnly   bool      `json:"read_only"`
	Parent     string    `json:"parent,omitempty"`
	Created    time.Time `json:"created"`
	Epoch      uint64    `json:"epoch"`
	Attached   bool      `json:"attached"`
	Written    int64     `json:"written"` // bytes of allocated chunks
	Stored     int64     `json:"stored"`  // bytes after compression and dedup
}

// CreateRequest creates a volume. Policy is TOML text; empty means the
// node's default policy.
type CreateRequest struct {
	Name       string `json:"name"`
	Size       int64  `json:"size"`
	Policy     string `json:"policy,omitempty"`
	PolicyFile string `json:"policy_file,omitempty"` // for error messages
}

// ResizeRequest resizes a volume.
type ResizeRequest struct {
	Size int64 `json:"size"`
}

// NameRequest names the snapshot or clone to make.
type NameRequest struct {
	Name string `json:"name"`
}

// GCResult reports a garbage collection.
type GCResult struct {
	Marked        int64 `json:"marked"`
	Swept         int64 `json:"swept"`
	DiskBytesFrom int64 `json:"disk_bytes_before"`
	DiskBytesTo   int64 `json:"disk_bytes_after"`
	// Nodes is how many nodes swept their silos (the disk bytes are their
	// sums); 0 on a single node.
	Nodes int `json:"nodes,omitempty"`
}

// Status describes a node.
type Status struct {
	Node    string        `json:"node"`
	Version string        `json:"version"`
	DataDir string        `json:"data_dir"`
	Uptime  time.Duration `json:"uptime"`
	NBD     string        `json:"nbd,omitempty"` // NBD listen address
	Storage StorageStatus `json:"storage"`
	Shards  []ShardStatus `json:"shards"`
	Volumes int           `json:"volumes"`
	Clients int           `json:"clients"` // open NBD connections
	Nodes   []NodeStatus  `json:"nodes,omitempty"`
	Repair  RepairStatus  `json:"repair"`
	// LastGC is the last garbage collection this node ran (asked for or
	// automatic), if any since it started.
	LastGC *GCStatus `json:"last_gc,omitempty"`
}

// GCStatus is the outcome of a garbage collection a node ran.
type GCStatus struct {
	At        time.Time     `json:"at"`
	Took      time.Duration `json:"took"`
	Automatic bool          `json:"automatic"`
	Result    GCResult      `json:"result"`
	Error     string        `json:"error,omitempty"`
}

// NodeStatus is one cluster member as this node's gossip sees it.
type NodeStatus struct {
	ID      string `json:"id"`
	Zone    string `json:"zone,omitempty"`
	State   string `json:"state"` // alive, suspect, dead, left
	Storage bool   `json:"storage"`
	NBD     string `json:"nbd,omitempty"`
	InView  bool   `json:"in_view"` // placement still counts it (alive, or dead for less than remove-after)
}

// RepairStatus reports pieces written elsewhere while their holder was
// down, and their return.
type RepairStatus struct {
	Pending         int   `json:"pending"`           // pieces waiting for their holder to come back
	HandedOffBytes  int64 `json:"handed_off_bytes"`  // bytes written to fallback nodes
	HandedBackBytes int64 `json:"handed_back_bytes"` // bytes given back to their holders
	UnderReplicated int   `json:"under_replicated_shards"`
	// The anti-entropy pass (see node.ScrubStatus).
	ScrubRunning    bool      `json:"scrub_running"`
	ScrubPasses     int       `json:"scrub_passes"`
	ScrubDone       time.Time `json:"scrub_done"`
	ScrubChecked    int64     `json:"scrub_checked"`
	ScrubRepaired   int64     `json:"scrub_repaired"`
	ScrubUnreadable int64     `json:"scrub_unreadable"`
	ScrubTotal      int64     `json:"scrub_total"`   // pieces this node held when the pass began
	ScrubScanned    int64     `json:"scrub_scanned"` // of which the pass has looked at so far
	ScrubDropped    int64     `json:"scrub_dropped"` // surplus pieces deleted once their holder had them
	ScrubMoved      int64     `json:"scrub_moved"`   // pieces copied from a fallback to a holder that lacked them
	// Background copies since the node started (anti-entropy and
	// give-back), and their throttle.
	RepairedPieces  int64         `json:"repaired_pieces"`   // pieces anti-entropy wrote to a holder that lacked them
	RepairedBytes   int64         `json:"repaired_bytes"`    // their bytes
	GivenBackPieces int64         `json:"given_back_pieces"` // pieces given back (HandedBackBytes is their bytes)
	DroppedPieces   int64         `json:"dropped_pieces"`    // surplus copies deleted once their holder had them
	Rate            int64         `json:"rate"`              // the throttle's limit, bytes per second while clients are active; 0: unlimited
	RecentRate      int64         `json:"recent_rate"`       // bytes per second background copies moved over the last 10 s (reads and writes)
	Throttled       time.Duration `json:"throttled"`         // total time background copies waited for the throttle
	ClientsIdle     bool          `json:"clients_idle"`      // no client I/O lately: background copies run unthrottled
}

// Waiting returns how many pieces are still waiting for a copy: those
// waiting to go back to their holder, plus the pieces the running
// anti-entropy pass has yet to check (an upper bound: most need nothing).
func (r RepairStatus) Waiting() int64 {
	w := int64(r.Pending)
	if r.ScrubRunning {
		w += max(r.ScrubTotal-r.ScrubScanned, 0)
	}
	return w
}

// StorageStatus is the node's silo.
type StorageStatus struct {
	Pieces    int64 `json:"pieces"`
	LiveBytes int64 `json:"live_bytes"`
	DiskBytes int64 `json:"disk_bytes"`
	Relocated int64 `json:"relocated"` // pieces read relocation moved since the node started
}

// ShardStatus is one raft group as seen from this node.
type ShardStatus struct {
	ID       uint64 `json:"id"`
	Leader   uint64 `json:"leader"`
	Replicas int    `json:"replicas"`
}
