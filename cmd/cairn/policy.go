package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v3"

	"cairn/policies"
)

func policyCommand() *cli.Command {
	return &cli.Command{
		Name:   "policy",
		Usage:  "work with volume policies",
		Action: groupAction,
		Commands: []*cli.Command{{
			Name:      "check",
			Usage:     "validate a policy file and say what it means",
			ArgsUsage: "FILE",
			Flags: []cli.Flag{
				&cli.IntFlag{Name: "nodes", Usage: "also check that a cluster of this many storage nodes can meet it"},
				&cli.IntFlag{Name: "zones", Value: 1, Usage: "with --nodes: how many zones the cluster spans"},
			},
			Action: func(ctx context.Context, cmd *cli.Command) error {
				path, err := oneArg(cmd, "policy file")
				if err != nil {
					return err
				}
				data, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				p, err := policies.Parse(filepath.Base(path), data)
				if err != nil {
					return err
				}
				if n := cmd.Int("nodes"); n > 0 {
					if err := p.Check(policies.Facts{StorageNodes: int(n), Zones: int(cmd.Int("zones"))}); err != nil {
						return err
					}
				}
				fmt.Fprintf(cmd.Root().Writer, "%s: ok\n%s", path, p.Describe())
				return nil
			},
		}},
	}
}
