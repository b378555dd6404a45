package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v3"

	"cairn/internal/admin"
	"cairn/internal/node"
	"cairn/nbd"
	"cairn/policies"
	"cairn/volume"
)

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run a one-node Cairn serving its volumes over NBD (no configuration needed)",
		Description: "Starts a node with its data in --data (created on first start), creates the volume\n" +
			"--volume if it does not exist yet, and serves every volume as an NBD export on --nbd.\n" +
			"SIGINT or SIGTERM stops it cleanly: every write is flushed first.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "nbd", Value: "127.0.0.1:10809", Usage: "NBD listen address"},
			&cli.StringFlag{Name: "raft", Value: node.DefaultRaftAddress, Usage: "raft listen address (recorded at first start)"},
			&cli.StringFlag{Name: "volume", Value: "default", Usage: "the default volume (the export an NBD client gets with no name); created if missing"},
			&cli.StringFlag{Name: "size", Value: "16GiB", Usage: "size of the default volume when it is created (thin: it takes no space until written)"},
			&cli.StringFlag{Name: "policy", Usage: "policy file for the default volume when it is created (default: one node, 4KiB blocks, 1 replica)"},
			&cli.DurationFlag{Name: "checkpoint-every", Usage: "period of background checkpoints of each volume's map (default 30s)"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			log, err := newLogger(cmd, cmd.Root().ErrWriter)
			if err != nil {
				return err
			}
			size, err := parseSize(cmd.String("size"))
			if err != nil {
				return err
			}
			pol := policies.Default()
			if f := cmd.String("policy"); f != "" {
				if pol, err = policies.Load(f); err != nil {
					return err
				}
			}
			nbdAddr := cmd.String("nbd")
			l, err := net.Listen("tcp", nbdAddr)
			if err != nil {
				return fmt.Errorf("cannot listen for NBD on %s (is another cairn or NBD server running there? pass --nbd ADDR): %w", nbdAddr, err)
			}
			defer l.Close()

			dataDir := cmd.String("data")
			raftAddr := ""
			if cmd.IsSet("raft") {
				raftAddr = cmd.String("raft")
			}
			node.Version = version
			start := time.Now()
			n, err := node.Open(ctx, node.Config{DataDir: dataDir, RaftAddress: raftAddr, Logger: log, CheckpointEvery: cmd.Duration("checkpoint-every")})
			if err != nil {
				return err
			}
			closeNode := func() {
				cctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				if err := n.Close(cctx); err != nil {
					log.Error("closing the node", "err", err)
				}
			}
			name := cmd.String("volume")
			info, err := n.Catalog().Inspect(ctx, name)
			if errors.Is(err, volume.ErrNotFound) {
				info, err = n.Catalog().Create(ctx, name, size, pol)
			}
			if err != nil {
				closeNode()
				return err
			}

			al, err := admin.ListenUnix(filepath.Join(dataDir, admin.SocketName))
			if err != nil {
				closeNode()
				return err
			}
			adm := admin.NewServer(n, log)
			go adm.Serve(al)

			srv := &nbd.Server{Exports: n.Exports(), DefaultExport: name, Logger: log, Classify: node.NBDClassify, MultiConn: true}
			n.SetNBD(node.NBDInfo{Addr: l.Addr().String(), Clients: srv.ActiveConns})
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ctx, l) }()

			host, port, _ := net.SplitHostPort(l.Addr().String())
			fmt.Fprintf(cmd.Root().Writer, "cairn %s: node %s ready in %s, data in %s\n", version, n.Name(), time.Since(start).Round(time.Millisecond), dataDir)
			fmt.Fprintf(cmd.Root().Writer, "serving volume %q (%s, %s) at nbd://%s/%s\n", name, formatSize(info.Size), info.Policy.String(), l.Addr(), name)
			fmt.Fprintf(cmd.Root().Writer, "attach it:  nbd-client %s %s -N %s /dev/nbd0\n", host, port, name)
			fmt.Fprintf(cmd.Root().Writer, "  or, without the nbd kernel module:  mkdir -p /tmp/nbd && nbdfuse /tmp/nbd nbd://%s/%s & losetup -f --show /tmp/nbd/nbd\n", l.Addr(), name)
			fmt.Fprintf(cmd.Root().Writer, "manage it:  cairn --data %s volume list   (Ctrl-C stops the node after flushing)\n", dataDir)

			var serveErr error
			select {
			case <-ctx.Done():
			case serveErr = <-done:
			}
			log.Info("shutting down: flushing volumes")
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				log.Error("stopping the NBD server", "err", err)
			}
			_ = adm.Shutdown(sctx)
			closeNode()
			_ = os.Remove(filepath.Join(dataDir, admin.SocketName))
			fmt.Fprintln(cmd.Root().Writer, "cairn: stopped; every write was flushed")
			return serveErr
		},
	}
}
