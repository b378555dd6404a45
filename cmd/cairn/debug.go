package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"
)

// debugEnv names the environment variable that turns on the profiling
// endpoint of `cairn serve` and `cairn node`: CAIRN_PPROF=127.0.0.1:6060
// serves net/http/pprof under /debug/pprof/ on that address. It is a debug
// aid, off by default, and meant for loopback addresses only (profiles
// reveal memory contents' shape and timings, not data, but anyone who can
// reach the address can slow the node down).
const debugEnv = "CAIRN_PPROF"

// startDebug starts the profiling endpoint if debugEnv is set and returns
// the function that stops it. A bad address is logged, not fatal: the
// node serves without profiles.
func startDebug(ctx context.Context, log *slog.Logger) (stop func()) {
	addr := os.Getenv(debugEnv)
	if addr == "" {
		return func() {}
	}
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		log.Warn("profiling endpoint not started", "env", debugEnv, "addr", addr, "err", err)
		return func() {}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("profiling endpoint stopped", "err", err)
		}
	}()
	log.Info("profiling endpoint", "addr", "http://"+l.Addr().String()+"/debug/pprof/")
	return func() { srv.Close() }
}
