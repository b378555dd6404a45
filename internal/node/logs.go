package node

import (
	"context"
	"log/slog"
)

// demoted is a slog.Handler that logs everything below Error at Debug.
// Dragonboat narrates elections, ReadIndex retries and its transport at
// Info and Warning; on a healthy node that is noise for a user, so its
// messages show only with --log-level debug, errors excepted.
type demoted struct{ h slog.Handler }

func (d demoted) Enabled(ctx context.Context, l slog.Level) bool {
	if l < slog.LevelError {
		l = slog.LevelDebug
	}
	return d.h.Enabled(ctx, l)
}

func (d demoted) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelError {
		r.Level = slog.LevelDebug
	}
	return d.h.Handle(ctx, r)
}

func (d demoted) WithAttrs(as []slog.Attr) slog.Handler { return demoted{d.h.WithAttrs(as)} }
func (d demoted) WithGroup(g string) slog.Handler       { return demoted{d.h.WithGroup(g)} }
