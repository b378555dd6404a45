package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v3"

	"cairn/internal/admin"
)

// client returns the admin client of the node whose data directory --data names.
func client(cmd *cli.Command) *admin.Client {
	return admin.NewClient(filepath.Join(cmd.String("data"), admin.SocketName))
}

// remote wraps errors of the admin client: a node that is not running gets
// errNoNode so that the exit code says so.
func remote(err error) error {
	var re *admin.RemoteError
	if err == nil || errors.As(err, &re) {
		return err
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("%w: %w", errNoNode, err)
}

// oneArg returns the single positional argument named what.
func oneArg(cmd *cli.Command, what string) (string, error) {
	if cmd.Args().Len() != 1 {
		return "", usagef("%s: want exactly one %s, got %d arguments (see `%s --help`)", cmd.FullName(), what, cmd.Args().Len(), cmd.FullName())
	}
	return cmd.Args().First(), nil
}

func volumeCommand() *cli.Command {
	return &cli.Command{
		Name:   "volume",
		Usage:  "create, list, inspect, resize, snapshot, clone, delete, import and export volumes of the running node",
		Action: groupAction,
		Commands: []*cli.Command{
			{
				Name:      "create",
				Usage:     "create a thin volume",
				ArgsUsage: "NAME",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "size", Value: "16GiB", Usage: "volume size (binary units: 512MiB, 10GiB, 1TiB)"},
					&cli.StringFlag{Name: "policy", Usage: "the volume's policy file (TOML); default: the node's default policy"},
				},
				Action: func(ctx context.Context, cmd *cli.Command) error {
					name, err := oneArg(cmd, "volume name")
					if err != nil {
						return err
					}
					size, err := parseSize(cmd.String("size"))
					if err != nil {
						return err
					}
					req := admin.CreateRequest{Name: name, Size: size}
					if f := cmd.String("policy"); f != "" {
						data, err := os.ReadFile(f)
						if err != nil {
							return fmt.Errorf("read policy: %w", err)
						}
						req.Policy, req.PolicyFile = string(data), filepath.Base(f)
					}
					return show(cmd)(client(cmd).CreateVolume(ctx, req))
				},
			},
			{
				Name:  "list",
				Usage: "list volumes",
				Action: func(ctx context.Context, cmd *cli.Command) error {
					vs, err := client(cmd).ListVolumes(ctx)
					if err != nil {
						return remote(err)
					}
					tw := tabwriter.NewWriter(cmd.Root().Writer, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "NAME\tSIZE\tWRITTEN\tSTORED\tATTACHED\tPOLICY")
					for _, v := range vs {
						name := v.Name
						if v.ReadOnly {
							name += " (snapshot)"
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\n", name, formatSize(v.Size), formatSize(v.Written), formatSize(v.Stored), v.Attached, v.Policy)
					}
					return tw.Flush()
				},
			},
			{
				Name:      "inspect",
				Usage:     "describe a volume: size, policy, space written, stored and on disk",
				ArgsUsage: "NAME",
				Action: func(ctx context.Context, cmd *cli.Command) error {
					name, err := oneArg(cmd, "volume name")
					if err != nil {
						return err
					}
					return show(cmd)(client(cmd).InspectVolume(ctx, name))
				},
			},
			{
				Name:      "resize",
				Usage:     "grow or shrink a volume (shrinking drops the data past the new end)",
				ArgsUsage: "NAME",
				Flags:     []cli.Flag{&cli.StringFlag{Name: "size", Required: true, Usage: "the new size"}},
				Action: func(ctx context.Context, cmd *cli.Command) error {
					name, err := oneArg(cmd, "volume name")
					if err != nil {
						return err
					}
					size, err := parseSize(cmd.String("size"))
					if err != nil {
						return err
					}
					return show(cmd)(client(cmd).ResizeVolume(ctx, name, size))
				},
			},
			pairCommand("snapshot", "take a read-only snapshot of a volume (instant: it shares every block)", "NAME SNAPSHOT",
				(*admin.Client).SnapshotVolume),
			pairCommand("clone", "make a writable volume from a snapshot (instant)", "SNAPSHOT NAME",
				(*admin.Client).CloneVolume),
			{
				Name:      "delete",
				Usage:     "delete a volume (its space comes back at the next garbage collection)",
				ArgsUsage: "NAME",
				Action: func(ctx context.Context, cmd *cli.Command) error {
					name, err := oneArg(cmd, "volume name")
					if err != nil {
						return err
					}
					if err := client(cmd).DeleteVolume(ctx, name); err != nil {
						return remote(err)
					}
					fmt.Fprintf(cmd.Root().Writer, "deleted %s\n", name)
					return nil
				},
			},
			{
				Name:      "import",
				Usage:     "write a raw image file into a volume (which must not be attached), with a progress bar",
				ArgsUsage: "NAME FILE",
				Flags:     []cli.Flag{&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress bar"}},
				Action: func(ctx context.Context, cmd *cli.Command) error {
					if cmd.Args().Len() != 2 {
						return usagef("volume import: want NAME FILE")
					}
					name, path := cmd.Args().Get(0), cmd.Args().Get(1)
					f, err := os.Open(path)
					if err != nil {
						return err
					}
					defer f.Close()
					st, err := f.Stat()
					if err != nil {
						return err
					}
					var r io.Reader = f
					if !cmd.Bool("quiet") {
						bar := newBar(st.Size(), "importing "+filepath.Base(path), cmd.Root().ErrWriter)
						defer bar.Finish()
						r = io.TeeReader(f, bar)
					}
					start := time.Now()
					info, err := client(cmd).ImportVolume(ctx, name, r, st.Size())
					if err != nil {
						return remote(err)
					}
					fmt.Fprintf(cmd.Root().Writer, "\nimported %s into %s in %s\n", formatSize(st.Size()), info.Name, time.Since(start).Round(time.Millisecond))
					return nil
				},
			},
			{
				Name:      "export",
				Usage:     "read a volume into a raw image file, with a progress bar",
				ArgsUsage: "NAME FILE",
				Flags:     []cli.Flag{&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress bar"}},
				Action: func(ctx context.Context, cmd *cli.Command) error {
					if cmd.Args().Len() != 2 {
						return usagef("volume export: want NAME FILE")
					}
					name, path := cmd.Args().Get(0), cmd.Args().Get(1)
					c := client(cmd)
					info, err := c.InspectVolume(ctx, name)
					if err != nil {
						return remote(err)
					}
					f, err := os.Create(path)
					if err != nil {
						return err
					}
					var w io.Writer = f
					if !cmd.Bool("quiet") {
						bar := newBar(info.Size, "exporting "+name, cmd.Root().ErrWriter)
						defer bar.Finish()
						w = io.MultiWriter(f, bar)
					}
					cw := &countWriter{w: w}
					if err := c.ExportVolume(ctx, name, cw); err != nil {
						f.Close()
						return remote(err)
					}
					if cw.n != info.Size {
						f.Close()
						return fmt.Errorf("export of %s ended after %d of %d bytes (see the node's log)", name, cw.n, info.Size)
					}
					if err := f.Sync(); err != nil {
						f.Close()
						return err
					}
					return f.Close()
				},
			},
		},
	}
}

// pairCommand makes a volume command that takes two names and prints the
// volume the node returns.
func pairCommand(name, usage, args string, do func(*admin.Client, context.Context, string, string) (admin.VolumeInfo, error)) *cli.Command {
	return &cli.Command{
		Name:      name,
		Usage:     usage,
		ArgsUsage: args,
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.Args().Len() != 2 {
				return usagef("volume %s: want %s", name, args)
			}
			return show(cmd)(do(client(cmd), ctx, cmd.Args().Get(0), cmd.Args().Get(1)))
		},
	}
}

// show returns a function that prints what a volume call returned, or
// its error as a remote one.
func show(cmd *cli.Command) func(admin.VolumeInfo, error) error {
	return func(info admin.VolumeInfo, err error) error {
		if err != nil {
			return remote(err)
		}
		printInfo(cmd.Root().Writer, info)
		return nil
	}
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func newBar(size int64, what string, w io.Writer) *progressbar.ProgressBar {
	return progressbar.NewOptions64(size,
		progressbar.OptionSetDescription(what),
		progressbar.OptionSetWriter(w),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionShowCount(),
		progressbar.OptionFullWidth(),
	)
}

func printInfo(w io.Writer, v admin.VolumeInfo) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "name:\t%s\n", v.Name)
	fmt.Fprintf(tw, "size:\t%s (%d bytes)\n", formatSize(v.Size), v.Size)
	fmt.Fprintf(tw, "block size:\t%s\n", formatSize(v.BlockSize))
	fmt.Fprintf(tw, "policy:\t%s\n", v.Policy)
	if v.Parent != "" {
		fmt.Fprintf(tw, "parent:\t%s\n", v.Parent)
	}
	fmt.Fprintf(tw, "read-only:\t%v\n", v.ReadOnly)
	fmt.Fprintf(tw, "created:\t%s\n", v.Created.Format(time.RFC3339))
	fmt.Fprintf(tw, "attached:\t%v (epoch %d)\n", v.Attached, v.Epoch)
	fmt.Fprintf(tw, "written:\t%s (%d bytes)\n", formatSize(v.Written), v.Written)
	fmt.Fprintf(tw, "stored:\t%s (%d bytes, after compression and dedup)\n", formatSize(v.Stored), v.Stored)
	tw.Flush()
}
