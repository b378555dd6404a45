package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v3"
)

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show the running node's health: storage, consensus shards, volumes, clients",
		Action: func(ctx context.Context, cmd *cli.Command) error {
			st, err := client(cmd).Status(ctx)
			if err != nil {
				return remote(err)
			}
			w := cmd.Root().Writer
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "node:\t%s (cairn %s, up %s)\n", st.Node, st.Version, st.Uptime.Round(time.Second))
			fmt.Fprintf(tw, "data:\t%s\n", st.DataDir)
			if st.NBD != "" {
				fmt.Fprintf(tw, "nbd:\t%s (%d clients)\n", st.NBD, st.Clients)
			}
			fmt.Fprintf(tw, "storage:\t%d pieces, %s live, %s on disk\n", st.Storage.Pieces, formatSize(st.Storage.LiveBytes), formatSize(st.Storage.DiskBytes))
			fmt.Fprintf(tw, "volumes:\t%d\n", st.Volumes)
			led := 0
			for _, s := range st.Shards {
				if s.Leader != 0 {
					led++
				}
			}
			fmt.Fprintf(tw, "shards:\t%d (%d with a leader)\n", len(st.Shards), led)
			if len(st.Nodes) > 0 {
				fmt.Fprintf(tw, "repair:\t%d pieces waiting for their holder; %s handed off, %s given back\n",
					st.Repair.Pending, formatSize(st.Repair.HandedOffBytes), formatSize(st.Repair.HandedBackBytes))
				fmt.Fprintf(tw, "shards led here lacking replicas:\t%d\n", st.Repair.UnderReplicated)
				fmt.Fprintf(tw, "anti-entropy:\t%d passes; last: %d blocks checked, %d pieces rewritten, %d unreadable (running: %v)\n",
					st.Repair.ScrubPasses, st.Repair.ScrubChecked, st.Repair.ScrubRepaired, st.Repair.ScrubUnreadable, st.Repair.ScrubRunning)
				fmt.Fprintf(tw, "nodes:\t%d\n", len(st.Nodes))
				for _, nd := range st.Nodes {
					fmt.Fprintf(tw, "  %s\t%s\tzone %q\tnbd %s\n", nd.ID, nd.State, nd.Zone, nd.NBD)
				}
			}
			return tw.Flush()
		},
	}
}

func gcCommand() *cli.Command {
	return &cli.Command{
		Name:  "gc",
		Usage: "collect garbage now: free blocks that no volume, snapshot or journal references",
		Action: func(ctx context.Context, cmd *cli.Command) error {
			res, err := client(cmd).CollectGarbage(ctx)
			if err != nil {
				return remote(err)
			}
			fmt.Fprintf(cmd.Root().Writer, "marked %d live blocks, swept %d; disk %s -> %s\n", res.Marked, res.Swept, formatSize(res.DiskBytesFrom), formatSize(res.DiskBytesTo))
			return nil
		},
	}
}

func scrubCommand() *cli.Command {
	return &cli.Command{
		Name:  "scrub",
		Usage: "run an anti-entropy pass now: every block this node holds a piece of is checked on all its holders and repaired",
		Action: func(ctx context.Context, cmd *cli.Command) error {
			res, err := client(cmd).Scrub(ctx)
			if err != nil {
				return remote(err)
			}
			fmt.Fprintf(cmd.Root().Writer, "checked %d blocks, rewrote %d pieces, %d unreadable\n", res.ScrubChecked, res.ScrubRepaired, res.ScrubUnreadable)
			if res.ScrubUnreadable > 0 {
				return fmt.Errorf("%d blocks have no intact copy left", res.ScrubUnreadable)
			}
			return nil
		},
	}
}
