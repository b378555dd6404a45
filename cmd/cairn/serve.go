package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v3"

	"cairn/internal/admin"
	"cairn/internal/node"
	"cairn/nbd"
	"cairn/overlay"
	"cairn/policies"
	"cairn/volume"
)

// defaultBusyPoll is --nbd-busy-poll's default: 30 µs took fio's 4 KiB
// random reads at queue depth 1 over NBD from 24,600-30,200 to
// 33,900-35,200 IOPS on the development VM (100 µs did no better), for
// 2-8 µs more server CPU per read (see nbd/poll.go). maxBusyPoll bounds
// it: a poll is a CPU kept busy per idle connection.
const (
	defaultBusyPoll = 30 * time.Microsecond
	maxBusyPoll     = time.Millisecond
)

// defaultLoopbackCC is --nbd-loopback-cc's default: cubic paces nothing
// and is built into every distribution kernel (nbd/congestion.go).
const defaultLoopbackCC = "cubic"

// frontendFlags are shared by serve and node.
func frontendFlags(nbdDefault string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "nbd", Value: nbdDefault, Usage: "NBD listen address"},
		&cli.StringFlag{Name: "volume", Value: "default", Usage: "the default volume (the export an NBD client gets with no name)"},
		&cli.StringFlag{Name: "size", Value: "16GiB", Usage: "size of the default volume when it is created (thin: it takes no space until written)"},
		&cli.StringFlag{Name: "policy", Usage: "policy file for the default volume when it is created"},
		&cli.DurationFlag{Name: "checkpoint-every", Usage: "period of background checkpoints of each volume's map (default 30s)"},
		&cli.DurationFlag{Name: "gc-every", Value: time.Hour, Usage: "period of automatic garbage collection (a single node skips periods without writes; in a cluster one node runs it for all); 0 turns it off (cairn gc runs one now)"},
		&cli.DurationFlag{Name: "nbd-busy-poll", Value: defaultBusyPoll, Usage: "how long an NBD connection with nothing in flight keeps polling its socket for the next request before it sleeps (cuts queue-depth-1 latency where waking a CPU is slow, as in VMs; costs up to that much CPU per request); 0 turns it off"},
		&cli.StringFlag{Name: "nbd-loopback-cc", Value: defaultLoopbackCC, Usage: "TCP congestion control of NBD clients on this machine (a loopback address), reno when the kernel refuses it; \"\" keeps the system's default (clients elsewhere always do): a pacing one such as bbr cost local clients about a fifth of their 1 MiB read throughput on the development VM (see nbd/congestion.go)"},
		&cli.BoolFlag{Name: "relocate-reads", Usage: "copy the blocks a large read finds scattered (as random writes leave them) into the order they were read, once each, so that later sequential reads of them stream; costs a write of what is read, while it runs (off by default: see blocks/silo/relocate.go)"},
		&cli.StringFlag{Name: "write-cache", Usage: "memory for written data not yet pushed to storage, all volumes together (default: 1/16 of the memory this process may use, 64MiB to 2GiB); FLUSH pushes it"},
	}
}

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run a one-node Cairn serving its volumes over NBD (no configuration needed)",
		Description: "Starts a node with its data in --data (created on first start), creates the volume\n" +
			"--volume if it does not exist yet, and serves every volume as an NBD export on --nbd.\n" +
			"SIGINT or SIGTERM stops it cleanly: every write is flushed first.",
		Flags: append(frontendFlags("127.0.0.1:10809"),
			&cli.StringFlag{Name: "raft", Value: node.DefaultRaftAddress, Usage: "raft listen address (recorded at first start)"},
		),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			cfg := node.Config{}
			if cmd.IsSet("raft") {
				cfg.RaftAddress = cmd.String("raft")
			}
			return runNode(ctx, cmd, cfg, true)
		},
	}
}

func nodeCommand() *cli.Command {
	return &cli.Command{
		Name:  "node",
		Usage: "run a cluster node: gossip, raft shards, pieces of every volume, and NBD exports",
		Description: "The first node of a cluster starts without --join and prints the cluster secret;\n" +
			"every other node joins through any member with --join ADDR --secret SECRET.\n" +
			"Gossip listens on --listen, raft on its port+1, the node-to-node data transport on port+2.\n" +
			"Every node serves every volume over NBD on --nbd (one writer per volume at a time).\n" +
			"With --storage=false the node is storage-less (a frontend): it serves NBD and joins gossip\n" +
			"but holds no pieces and no raft shards; it must join an existing cluster.",
		Flags: append(frontendFlags(""),
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:7946", Usage: "gossip address ip:port (raft uses port+1, data port+2)"},
			&cli.StringFlag{Name: "join", Usage: "gossip addresses of members to join, comma-separated (none: start a new cluster)"},
			&cli.StringFlag{Name: "zone", Usage: "this node's failure domain (rack, datacenter)"},
			&cli.StringFlag{Name: "secret", Sources: cli.EnvVars("CAIRN_SECRET"), Usage: "the cluster secret (needed to join; the first node prints it)"},
			&cli.DurationFlag{Name: "remove-after", Value: 5 * time.Minute, Usage: "how long a dead node keeps its place before its data is rebuilt elsewhere"},
			&cli.StringFlag{Name: "gossip-profile", Value: overlay.ProfileLAN, Usage: "gossip timings: lan, or local for nodes sharing one machine"},
			&cli.DurationFlag{Name: "scrub-every", Value: time.Hour, Usage: "period of anti-entropy passes (one also runs whenever a node joins or leaves for good)"},
			&cli.BoolFlag{Name: "storage", Value: true, Usage: "hold pieces and raft shards; --storage=false makes a storage-less node that only serves NBD exports (its first start must --join a cluster)"},
			&cli.StringFlag{Name: "repair-rate", Value: "64MiB", Usage: "bytes per second that repair and give-back may move while clients do I/O through this node (0: unlimited; unthrottled while clients are idle)"},
		),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			listen := cmd.String("listen")
			host, _, err := net.SplitHostPort(listen)
			if err != nil {
				return usagef("--listen %q: want ip:port", listen)
			}
			if !cmd.IsSet("nbd") {
				cmd.Set("nbd", net.JoinHostPort(host, "10809"))
			}
			var seeds []string
			for _, s := range strings.Split(cmd.String("join"), ",") {
				if s = strings.TrimSpace(s); s != "" {
					seeds = append(seeds, s)
				}
			}
			cfg := node.Config{Cluster: &node.ClusterConfig{
				Listen: listen, Seeds: seeds, Zone: cmd.String("zone"), Secret: cmd.String("secret"),
				NBDAddr: cmd.String("nbd"), RemoveAfter: cmd.Duration("remove-after"), Profile: cmd.String("gossip-profile"), ScrubEvery: cmd.Duration("scrub-every"),
				Frontend: !cmd.Bool("storage"),
			}}
			return runNode(ctx, cmd, cfg, len(seeds) == 0)
		},
	}
}

// runNode opens a node, serves NBD and the admin API until ctx ends, then
// stops cleanly: the NBD server flushes and closes every volume first.
func runNode(ctx context.Context, cmd *cli.Command, cfg node.Config, createDefault bool) error {
	out := cmd.Root().Writer
	log, err := newLogger(cmd, cmd.Root().ErrWriter)
	if err != nil {
		return err
	}
	defer startDebug(ctx, log)()
	size, err := parseSize(cmd.String("size"))
	if err != nil {
		return err
	}
	cache := volume.DefaultDirtyLimit()
	if s := cmd.String("write-cache"); s != "" {
		if cache, err = parseSize(s); err != nil {
			return usagef("--write-cache: %v", err)
		}
		if cache < 1<<20 {
			return usagef("--write-cache %s: want at least 1MiB", s)
		}
	}
	setMemoryLimit(log, cache)
	cfg.WriteCache = cache
	repairRate := int64(-1) // not a cluster node: no background copies
	if s := cmd.String("repair-rate"); s != "" {
		if repairRate, err = parseRate(s); err != nil {
			return err
		}
	}
	pol := policies.Default()
	if f := cmd.String("policy"); f != "" {
		if pol, err = policies.Load(f); err != nil {
			return err
		}
	}
	busyPoll := cmd.Duration("nbd-busy-poll")
	if busyPoll < 0 || busyPoll > maxBusyPoll {
		return usagef("--nbd-busy-poll %v: want 0 (off) to %v", busyPoll, maxBusyPoll)
	}
	loopbackCC := cmd.String("nbd-loopback-cc")
	if !validCCName(loopbackCC) {
		return usagef("--nbd-loopback-cc %q: want the name of a TCP congestion control (as in /proc/sys/net/ipv4/tcp_available_congestion_control), or \"\" for the system's default", loopbackCC)
	}
	nbdAddr := cmd.String("nbd")
	l, err := net.Listen("tcp", nbdAddr)
	if err != nil {
		return fmt.Errorf("cannot listen for NBD on %s (is another cairn or NBD server running there? pass --nbd ADDR): %w", nbdAddr, err)
	}
	defer l.Close()

	dataDir := cmd.String("data")
	cfg.DataDir, cfg.Logger, cfg.CheckpointEvery = dataDir, log, cmd.Duration("checkpoint-every")
	cfg.RelocateReads = cmd.Bool("relocate-reads")
	if cfg.GCEvery = cmd.Duration("gc-every"); cfg.GCEvery < 0 {
		return usagef("--gc-every %v: want a period, or 0 for none", cfg.GCEvery)
	}
	node.Version = version
	start := time.Now()
	n, err := node.Open(ctx, cfg)
	if err != nil {
		return err
	}
	if repairRate >= 0 {
		n.SetRepairRate(repairRate)
	}
	closeNode := func() error {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		err := n.Close(cctx)
		if err != nil {
			log.Error("closing the node", "err", err)
		}
		return err
	}
	name := cmd.String("volume")
	if createDefault {
		_, err := n.Catalog().Inspect(ctx, name)
		if errors.Is(err, volume.ErrNotFound) {
			_, err = n.Catalog().Create(ctx, name, size, pol)
		}
		if err != nil {
			_ = closeNode()
			return err
		}
	}

	al, err := admin.ListenUnix(filepath.Join(dataDir, admin.SocketName))
	if err != nil {
		_ = closeNode()
		return err
	}
	adm := admin.NewServer(n, log)
	go adm.Serve(al)

	srv := &nbd.Server{Exports: n.Exports(), DefaultExport: name, Logger: log, Classify: node.NBDClassify, MultiConn: true, BusyPoll: busyPoll, LoopbackCongestion: loopbackCC}
	n.SetNBD(node.NBDInfo{Addr: l.Addr().String(), Clients: srv.ActiveConns})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()

	printReady(out, n, dataDir, l.Addr().String(), name, time.Since(start))

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-done:
	}
	log.Info("shutting down: flushing volumes (interrupt again to stop at once; what clients flushed is safe either way)")
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, nbd.ErrServerClosed) {
		log.Error("stopping the NBD server", "err", err)
	}
	_ = adm.Shutdown(sctx)
	closeErr := closeNode()
	_ = os.Remove(filepath.Join(dataDir, admin.SocketName))
	if closeErr != nil {
		fmt.Fprintf(out, "cairn: stopped, but not cleanly: %v\ncairn: writes a client flushed are safe; writes it never flushed may be lost\n", closeErr)
		if serveErr == nil || errors.Is(serveErr, nbd.ErrServerClosed) {
			serveErr = fmt.Errorf("closing the node: %w", closeErr)
		}
		return serveErr
	}
	if lost := n.Catalog().LostUnflushed(); lost > 0 {
		fmt.Fprintf(out, "cairn: stopped; %s written but never flushed could not be stored (see the log); every write a client flushed is safe\n", formatSize(lost))
	} else {
		fmt.Fprintln(out, "cairn: stopped; every write was flushed")
	}
	if errors.Is(serveErr, nbd.ErrServerClosed) {
		serveErr = nil
	}
	return serveErr
}

// printReady tells the user how to attach.
func printReady(w io.Writer, n *node.Node, dataDir, addr, name string, took time.Duration) {
	host, port, _ := net.SplitHostPort(addr)
	fmt.Fprintf(w, "cairn %s: node %s ready in %s, data in %s\n", version, n.Name(), took.Round(time.Millisecond), dataDir)
	if s := n.Secret(); s != "" {
		fmt.Fprintf(w, "cluster secret (give it to joining nodes with --secret): %s\n", s)
	}
	if info, err := n.Catalog().Inspect(context.Background(), name); err == nil {
		fmt.Fprintf(w, "serving volume %q (%s, %s) at nbd://%s/%s\n", name, formatSize(info.Size), info.Policy.String(), addr, name)
	} else {
		fmt.Fprintf(w, "serving volumes at nbd://%s/NAME (create one with `cairn --data %s volume create NAME`)\n", addr, dataDir)
	}
	fmt.Fprintf(w, "attach it:  nbd-client %s %s -N %s /dev/nbd0\n", host, port, name)
	fmt.Fprintf(w, "  or, without the nbd kernel module:  mkdir -p /tmp/nbd && nbdfuse /tmp/nbd nbd://%s/%s & losetup -f --show /tmp/nbd/nbd\n", addr, name)
	fmt.Fprintf(w, "manage it:  cairn --data %s volume list   (Ctrl-C stops the node after flushing)\n", dataDir)
}

// validCCName reports whether s could name a TCP congestion control: at
// most 15 lower-case letters, digits and underscores (TCP_CA_NAME_MAX is
// 16 with the NUL), or "" for none.
func validCCName(s string) bool {
	if len(s) > 15 {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}
