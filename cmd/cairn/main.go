// Command cairn runs and administers Cairn nodes.
//
//	cairn serve                      one node, data in ./cairn-data, the default volume over NBD on 127.0.0.1:10809
//	cairn volume create|list|inspect|resize|snapshot|clone|delete|import|export
//	cairn policy check FILE          validate a volume policy and say what it means
//	cairn status                     the running node's health
//	cairn gc                         collect garbage now
//
// Exit codes: 0 success; 1 an operation failed (the message says why);
// 2 the command line was wrong; 3 the named volume does not exist;
// 4 no node is running at the data directory's admin socket.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v3"

	"cairn/volume"
)

// Exit codes.
const (
	exitFailed   = 1
	exitUsage    = 2
	exitNotFound = 3
	exitNoNode   = 4
)

// usageError marks an error in the command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// errNoNode marks "no node answers on the admin socket".
var errNoNode = errors.New("no node running")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// The first signal starts a clean shutdown; restoring the default
		// handling lets a second one stop the process at once (a shutdown
		// waiting for dead peers can take minutes). Flushed writes are
		// durable either way.
		<-ctx.Done()
		stop()
	}()
	os.Exit(run(ctx, os.Args, os.Stdout, os.Stderr))
}

// run runs the command line args and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := newApp(stdout, stderr)
	err := app.Run(ctx, args)
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "cairn: %v\n", err)
	var ue usageError
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, errNoNode):
		return exitNoNode
	case errors.Is(err, volume.ErrNotFound):
		return exitNotFound
	default:
		return exitFailed
	}
}

func newApp(stdout, stderr io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "cairn",
		Usage:     "a decentralized, self-healing block store serving virtual disks over NBD",
		Version:   version,
		Writer:    stdout,
		ErrWriter: stderr,
		// Errors are printed once, by run, with the exit code chosen there.
		ExitErrHandler: func(context.Context, *cli.Command, error) {},
		OnUsageError: func(_ context.Context, _ *cli.Command, err error, _ bool) error {
			return usageError{err.Error()}
		},
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data", Value: "./cairn-data", Usage: "the node's data directory (its admin socket is inside)"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
		},
		Commands: []*cli.Command{
			serveCommand(),
			nodeCommand(),
			volumeCommand(),
			policyCommand(),
			statusCommand(),
			gcCommand(),
			scrubCommand(),
		},
	}
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// groupAction is the action of a command that only groups subcommands: an
// unknown subcommand is a usage error, no subcommand shows the help.
func groupAction(ctx context.Context, cmd *cli.Command) error {
	if cmd.Args().Len() > 0 {
		return usagef("%q is not a %s command; see `%s --help`", cmd.Args().First(), cmd.FullName(), cmd.FullName())
	}
	return cli.ShowSubcommandHelp(cmd)
}

func newLogger(cmd *cli.Command, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cmd.String("log-level"))); err != nil {
		return nil, usagef("--log-level %q: write debug, info, warn or error", cmd.String("log-level"))
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), nil
}
