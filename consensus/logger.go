package consensus

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	dblog "github.com/lni/dragonboat/v4/logger"
)

var (
	bridgeOnce sync.Once
	bridgeLog  atomic.Pointer[slog.Logger]
)

// BridgeLogs sends dragonboat's process-wide logging to l (slog.Default()
// when l is nil). Dragonboat allows its logger factory to be installed only
// once per process; BridgeLogs installs it on the first call and later calls
// only change the destination, so it is safe to call any number of times,
// concurrently. Open calls it with Config.Logger; with several hosts in one
// process (tests) the last logger given wins. Levels: dragonboat's Info
// lines (many per shard start) go to slog Debug, its raft package's
// warnings (every election) to Info, its transport's errors (a peer that
// is down) to Warn; other warnings, errors and panics keep their level.
func BridgeLogs(l *slog.Logger) {
	if l == nil {
		l = slog.Default()
	}
	bridgeLog.Store(l)
	bridgeOnce.Do(func() {
		dblog.SetLoggerFactory(func(pkg string) dblog.ILogger {
			lg := &slogBridge{pkg: pkg}
			lg.level.Store(int32(dblog.INFO))
			return lg
		})
	})
}

// slogBridge is one dragonboat package's logger.
type slogBridge struct {
	pkg   string
	level atomic.Int32 // dragonboat LogLevel: messages above it are dropped
}

func (b *slogBridge) log(lvl dblog.LogLevel, sl slog.Level, format string, args []interface{}) {
	if lvl > dblog.LogLevel(b.level.Load()) {
		return
	}
	l := bridgeLog.Load()
	if l == nil || !l.Enabled(context.Background(), sl) {
		return
	}
	l.Log(context.Background(), sl, fmt.Sprintf(format, args...), "component", "dragonboat/"+b.pkg)
}

func (b *slogBridge) SetLevel(l dblog.LogLevel) { b.level.Store(int32(l)) }
func (b *slogBridge) Debugf(f string, a ...interface{}) {
	b.log(dblog.DEBUG, slog.LevelDebug-4, f, a)
}
func (b *slogBridge) Infof(f string, a ...interface{}) { b.log(dblog.INFO, slog.LevelDebug, f, a) }

// Warningf: dragonboat's raft package warns of every election, which is
// routine; those go to Info.
func (b *slogBridge) Warningf(f string, a ...interface{}) {
	lvl := slog.LevelWarn
	if b.pkg == "raft" {
		lvl = slog.LevelInfo
	}
	b.log(dblog.WARNING, lvl, f, a)
}

// Errorf: the transport's errors (a peer that is down refuses
// connections) are routine in a cluster with a dead node; they go to Warn.
func (b *slogBridge) Errorf(f string, a ...interface{}) {
	lvl := slog.LevelError
	if b.pkg == "transport" {
		lvl = slog.LevelWarn
	}
	b.log(dblog.ERROR, lvl, f, a)
}

// Panicf logs and panics, as dragonboat expects of it (it is used for
// broken internal invariants, not for outside input).
func (b *slogBridge) Panicf(f string, a ...interface{}) {
	b.log(dblog.CRITICAL, slog.LevelError, f, a)
	panic(fmt.Sprintf("dragonboat/%s: "+f, append([]interface{}{b.pkg}, a...)...))
}
