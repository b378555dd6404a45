package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v3"

	"cairn/internal/admin"
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
			fmt.Fprintf(tw, "storage:\t%d pieces, %s live, %s on disk", st.Storage.Pieces, formatSize(st.Storage.LiveBytes), formatSize(st.Storage.DiskBytes))
			if st.Storage.Relocated > 0 {
				fmt.Fprintf(tw, ", %d moved into read order", st.Storage.Relocated)
			}
			fmt.Fprintln(tw)
			fmt.Fprintf(tw, "volumes:\t%d\n", st.Volumes)
			if g := st.LastGC; g != nil {
				how := "asked for"
				if g.Automatic {
					how = "automatic"
				}
				outcome := fmt.Sprintf("swept %d, disk %s -> %s", g.Result.Swept, formatSize(g.Result.DiskBytesFrom), formatSize(g.Result.DiskBytesTo))
				if g.Error != "" {
					outcome = "failed: " + g.Error
				}
				fmt.Fprintf(tw, "last gc:\t%s ago (%s, took %s): %s\n", time.Since(g.At).Round(time.Second), how, g.Took.Round(time.Millisecond), outcome)
			}
			led := 0
			for _, s := range st.Shards {
				if s.Leader != 0 {
					led++
				}
			}
			fmt.Fprintf(tw, "shards:\t%d (%d with a leader)\n", len(st.Shards), led)
			if len(st.Nodes) > 0 {
				printRepair(tw, st.Repair)
				fmt.Fprintf(tw, "nodes:\t%d\n", len(st.Nodes))
				for _, nd := range st.Nodes {
					fmt.Fprintf(tw, "  %s\t%s\tzone %q\tnbd %s\n", nd.ID, nd.State, nd.Zone, nd.NBD)
				}
			}
			return tw.Flush()
		},
	}
}

// printRepair prints the background copies: what waits, what moved,
// how fast, and the anti-entropy pass.
func printRepair(w io.Writer, r admin.RepairStatus) {
	state := "idle"
	switch {
	case r.ScrubRunning:
		pct := 100.0
		if r.ScrubTotal > 0 {
			pct = 100 * float64(r.ScrubScanned) / float64(r.ScrubTotal)
		}
		state = fmt.Sprintf("anti-entropy pass %.0f%% (%d of %d pieces checked)", pct, r.ScrubScanned, r.ScrubTotal)
	case r.Pending > 0:
		state = "giving pieces back"
	}
	fmt.Fprintf(w, "repairing:\t%d pieces waiting; %s\n", r.Waiting(), state)
	limit := "unlimited"
	if r.Rate > 0 {
		limit = formatSize(r.Rate) + "/s while clients are busy"
	}
	if r.ClientsIdle {
		limit += "; clients idle: unthrottled"
	}
	fmt.Fprintf(w, "  copied:\t%s in %d pieces repaired, %s in %d pieces given back\n",
		formatSize(r.RepairedBytes), r.RepairedPieces, formatSize(r.HandedBackBytes), r.GivenBackPieces)
	fmt.Fprintf(w, "  rate:\t%s/s over the last 10s (limit %s; waited %s in all)\n", formatSize(r.RecentRate), limit, r.Throttled.Round(time.Millisecond))
	fmt.Fprintf(w, "  handed off:\t%s to other nodes while their holder was away; %d pieces waiting for their holder\n", formatSize(r.HandedOffBytes), r.Pending)
	fmt.Fprintf(w, "  anti-entropy:\t%d passes; last: %d blocks checked, %d pieces rewritten, %d moved to their holder, %d surplus copies dropped, %d unreadable (running: %v)\n",
		r.ScrubPasses, r.ScrubChecked, r.ScrubRepaired, r.ScrubMoved, r.ScrubDropped, r.ScrubUnreadable, r.ScrubRunning)
	fmt.Fprintf(w, "under-replicated:\t%d shards led here lacking replicas\n", r.UnderReplicated)
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
			swept := fmt.Sprintf("%d blocks", res.Swept)
			if res.Nodes > 0 {
				swept = fmt.Sprintf("%d pieces on %d nodes", res.Swept, res.Nodes)
			}
			fmt.Fprintf(cmd.Root().Writer, "marked %d live blocks, swept %s; disk %s -> %s\n", res.Marked, swept, formatSize(res.DiskBytesFrom), formatSize(res.DiskBytesTo))
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
			fmt.Fprintf(cmd.Root().Writer, "checked %d blocks, rewrote %d pieces, %d unreadable, dropped %d surplus copies\n", res.ScrubChecked, res.ScrubRepaired, res.ScrubUnreadable, res.ScrubDropped)
			if res.ScrubUnreadable > 0 {
				return fmt.Errorf("%d blocks have no intact copy left", res.ScrubUnreadable)
			}
			return nil
		},
	}
}
