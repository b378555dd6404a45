package node

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"cairn/internal/admin"
	"cairn/policies"
	"cairn/volume"
)

var _ admin.Backend = (*Node)(nil)

// Version is reported by Status; cmd/cairn sets it.
var Version = "dev"

// SetRepairRate sets the byte rate per second that background copies
// (anti-entropy repair, give-back of handed-off pieces) may use while
// clients are doing I/O through this node; 0 means unlimited. While
// clients are idle, background copies run unthrottled. Default:
// throttle.DefaultRate (64 MiB/s). A single node has no background copies,
// so the call does nothing there.
func (n *Node) SetRepairRate(bytesPerSecond int64) {
	if n.cluster != nil {
		n.cluster.setRepairRate(max(bytesPerSecond, 0))
	}
}

// NBDInfo is filled in by whoever serves NBD for this node (cmd/cairn), so
// that Status can report it.
type NBDInfo struct {
	Addr    string
	Clients func() int
}

// SetNBD records the node's NBD frontend for Status.
func (n *Node) SetNBD(info NBDInfo) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.nbd = info
}

func toInfo(i volume.Info) admin.VolumeInfo {
	return admin.VolumeInfo{
		Name:       i.Name,
		Size:       i.Size,
		BlockSize:  int64(i.Policy.BlockSize),
		Policy:     i.Policy.String(),
		PolicyTOML: string(i.Policy.Format()),
		ReadOnly:   i.ReadOnly,
		Parent:     i.Parent,
		Created:    i.Created,
		Epoch:      i.Epoch,
		Attached:   i.Attached,
		Written:    i.Written,
		Stored:     i.Stored,
	}
}

// Status implements admin.Backend.
func (n *Node) Status(ctx context.Context) (admin.Status, error) {
	vs, err := n.catalog.List(ctx)
	if err != nil {
		return admin.Status{}, err
	}
	st := n.silo.Stats()
	s := admin.Status{
		Node:    n.id.Name,
		Version: Version,
		DataDir: n.cfg.DataDir,
		Uptime:  time.Since(n.started),
		Storage: admin.StorageStatus{Pieces: st.Pieces, LiveBytes: st.LiveBytes, DiskBytes: st.DiskBytes, Relocated: st.Relocated},
		Volumes: len(vs),
		LastGC:  n.lastGC.Load(),
	}
	for _, sh := range n.raft.Shards() {
		s.Shards = append(s.Shards, admin.ShardStatus{ID: sh.ID, Leader: sh.LeaderID, Replicas: len(sh.Replicas)})
	}
	if c := n.cluster; c != nil {
		v := c.view()
		for _, m := range c.ml.Members() {
			_, in := v.nodes[m.Node.ID]
			s.Nodes = append(s.Nodes, admin.NodeStatus{ID: m.Node.ID, Zone: m.Node.Zone, State: strings.ToLower(m.State.String()), Storage: m.Node.Storage, NBD: m.Node.NBDAddr, InView: in})
		}
		s.Repair = admin.RepairStatus{Pending: c.pendingHints(), HandedOffBytes: c.handedOff.Load(), HandedBackBytes: c.handedBack.Load(), UnderReplicated: int(c.underReplicated.Load())}
		sc := c.scrubStatus()
		s.Repair.ScrubRunning, s.Repair.ScrubPasses, s.Repair.ScrubDone = sc.Running, sc.Passes, sc.LastDone
		s.Repair.ScrubChecked, s.Repair.ScrubRepaired, s.Repair.ScrubUnreadable = sc.Checked, sc.Repaired, sc.Unreadable
		s.Repair.ScrubTotal, s.Repair.ScrubScanned, s.Repair.ScrubDropped, s.Repair.ScrubMoved = sc.Total, sc.Scanned, sc.Dropped, sc.Moved
		s.Repair.RepairedPieces, s.Repair.RepairedBytes = c.bg.repairedPieces.Load(), c.bg.repairedBytes.Load()
		s.Repair.GivenBackPieces, s.Repair.DroppedPieces = c.givenBack.Load(), c.bg.droppedPieces.Load()
		ls := c.limiter().Stats()
		s.Repair.Rate, s.Repair.RecentRate, s.Repair.Throttled, s.Repair.ClientsIdle = ls.Rate, ls.Recent, ls.Waited, ls.Idle
	}
	n.mu.Lock()
	nbd := n.nbd
	n.mu.Unlock()
	s.NBD = nbd.Addr
	if nbd.Clients != nil {
		s.Clients = nbd.Clients()
	}
	return s, nil
}

// ListVolumes implements admin.Backend.
func (n *Node) ListVolumes(ctx context.Context) ([]admin.VolumeInfo, error) {
	vs, err := n.catalog.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]admin.VolumeInfo, len(vs))
	for i, v := range vs {
		out[i] = toInfo(v)
	}
	return out, nil
}

// CreateVolume implements admin.Backend.
func (n *Node) CreateVolume(ctx context.Context, req admin.CreateRequest) (admin.VolumeInfo, error) {
	p := policies.Default()
	if req.Policy != "" {
		file := req.PolicyFile
		if file == "" {
			file = "policy.toml"
		}
		var err error
		if p, err = policies.Parse(file, []byte(req.Policy)); err != nil {
			return admin.VolumeInfo{}, err
		}
	}
	if err := p.Check(n.facts()); err != nil {
		return admin.VolumeInfo{}, err
	}
	info, err := n.catalog.Create(ctx, req.Name, req.Size, p)
	if err != nil {
		return admin.VolumeInfo{}, err
	}
	return toInfo(info), nil
}

// facts describes the cluster for policy checks.
func (n *Node) facts() policies.Facts {
	if n.cluster != nil {
		return n.cluster.facts()
	}
	return policies.Facts{StorageNodes: 1, Zones: 1}
}

// InspectVolume implements admin.Backend.
func (n *Node) InspectVolume(ctx context.Context, name string) (admin.VolumeInfo, error) {
	info, err := n.catalog.Inspect(ctx, name)
	if err != nil {
		return admin.VolumeInfo{}, err
	}
	return toInfo(info), nil
}

// ResizeVolume implements admin.Backend.
func (n *Node) ResizeVolume(ctx context.Context, name string, size int64) (admin.VolumeInfo, error) {
	if err := n.catalog.Resize(ctx, name, size); err != nil {
		return admin.VolumeInfo{}, err
	}
	return n.InspectVolume(ctx, name)
}

// DeleteVolume implements admin.Backend.
func (n *Node) DeleteVolume(ctx context.Context, name string) error {
	return n.catalog.Delete(ctx, name)
}

// SnapshotVolume implements admin.Backend.
func (n *Node) SnapshotVolume(ctx context.Context, name, snapshot string) (admin.VolumeInfo, error) {
	if err := n.catalog.Snapshot(ctx, name, snapshot); err != nil {
		return admin.VolumeInfo{}, err
	}
	return n.InspectVolume(ctx, snapshot)
}

// CloneVolume implements admin.Backend.
func (n *Node) CloneVolume(ctx context.Context, snapshot, name string) (admin.VolumeInfo, error) {
	if err := n.catalog.Clone(ctx, snapshot, name); err != nil {
		return admin.VolumeInfo{}, err
	}
	return n.InspectVolume(ctx, name)
}

// copyChunk is the unit of import and export.
const copyChunk = 1 << 20

// ImportVolume implements admin.Backend: it attaches the volume, writes
// the image from offset 0, flushes and detaches.
func (n *Node) ImportVolume(ctx context.Context, name string, r io.Reader, size int64) (admin.VolumeInfo, error) {
	v, err := n.catalog.Open(ctx, name, volume.OpenOptions{})
	if err != nil {
		return admin.VolumeInfo{}, err
	}
	if size > v.Size() {
		v.Close(ctx)
		return admin.VolumeInfo{}, fmt.Errorf("node: the image is %d bytes, larger than volume %s (%d bytes); resize the volume first: %w", size, name, v.Size(), volume.ErrOutOfRange)
	}
	buf := make([]byte, copyChunk)
	var off int64
	for off < size {
		want := min(int64(len(buf)), size-off)
		if _, err := io.ReadFull(r, buf[:want]); err != nil {
			v.Close(ctx)
			return admin.VolumeInfo{}, fmt.Errorf("node: import into %s: reading the image at %d: %w", name, off, err)
		}
		if err := writeSparse(ctx, v, buf[:want], off); err != nil {
			v.Close(ctx)
			return admin.VolumeInfo{}, fmt.Errorf("node: import into %s: %w", name, err)
		}
		off += want
	}
	if err := v.Flush(ctx); err != nil {
		v.Close(ctx)
		return admin.VolumeInfo{}, err
	}
	if err := v.Close(ctx); err != nil {
		return admin.VolumeInfo{}, err
	}
	return n.InspectVolume(ctx, name)
}

// writeSparse writes p at off, turning all-zero stretches into holes
// (trims), so that importing a sparse image stays thin.
func writeSparse(ctx context.Context, v volume.Volume, p []byte, off int64) error {
	bs := v.BlockSize()
	for i := 0; i < len(p); {
		end := min(len(p), i+bs-int((off+int64(i))%int64(bs)))
		seg := p[i:end]
		var err error
		if isZero(seg) {
			err = v.WriteZeroes(ctx, off+int64(i), int64(len(seg)), true)
		} else {
			err = v.WriteAt(ctx, seg, off+int64(i))
		}
		if err != nil {
			return err
		}
		i = end
	}
	return nil
}

func isZero(p []byte) bool {
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}

// ExportVolume implements admin.Backend: it opens the volume read-only and
// streams it.
func (n *Node) ExportVolume(ctx context.Context, name string, w io.Writer) error {
	v, err := n.catalog.Open(ctx, name, volume.OpenOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer v.Close(ctx)
	buf := make([]byte, copyChunk)
	for off := int64(0); off < v.Size(); {
		m := min(int64(len(buf)), v.Size()-off)
		if err := v.ReadAt(ctx, buf[:m], off); err != nil {
			return fmt.Errorf("node: export %s at %d: %w", name, off, err)
		}
		if _, err := w.Write(buf[:m]); err != nil {
			return err
		}
		off += m
	}
	return nil
}

// CollectGarbage implements admin.Backend: mark and sweep, then compact
// the silo so that the space really comes back.
func (n *Node) CollectGarbage(ctx context.Context) (admin.GCResult, error) {
	return n.collectGarbage(ctx, false)
}

// collectGarbage runs one collection (one at a time) and records its
// outcome for Status.
func (n *Node) collectGarbage(ctx context.Context, auto bool) (admin.GCResult, error) {
	n.gcMu.Lock()
	defer n.gcMu.Unlock()
	start := time.Now()
	res, err := n.collectOnce(ctx)
	st := &admin.GCStatus{At: start, Took: time.Since(start), Automatic: auto, Result: res}
	if err != nil {
		st.Error = err.Error()
	}
	n.lastGC.Store(st)
	return res, err
}

// collectOnce is one collection: across the cluster, or of this node.
func (n *Node) collectOnce(ctx context.Context) (admin.GCResult, error) {
	if n.cluster != nil {
		return n.cluster.collectGarbage(ctx)
	}
	before := n.silo.Stats().DiskBytes
	st, err := n.collect(ctx)
	if err != nil {
		return admin.GCResult{}, err
	}
	if err := n.silo.Compact(ctx); err != nil {
		return admin.GCResult{}, err
	}
	return admin.GCResult{Marked: st.Marked, Swept: st.Swept, DiskBytesFrom: before, DiskBytesTo: n.silo.Stats().DiskBytes}, nil
}

// Scrub implements admin.Backend: one full anti-entropy pass, run now,
// or once the pass running (a view change's) has ended.
func (n *Node) Scrub(ctx context.Context) (admin.RepairStatus, error) {
	if n.cluster == nil {
		return admin.RepairStatus{}, fmt.Errorf("node: anti-entropy runs between cluster nodes; a single node checks its blocks on every read: %w", volume.ErrInvalid)
	}
	n.cluster.scrubPass(ctx, true)
	if err := ctx.Err(); err != nil {
		return admin.RepairStatus{}, fmt.Errorf("node: scrub: %w", err)
	}
	st, err := n.Status(ctx)
	return st.Repair, err
}
