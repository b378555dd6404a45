package nbd

import (
	"net"
)

// Loopback connections and TCP congestion control (Server.LoopbackCongestion).
//
// A client on the same machine (nbdfuse, qemu, fio, a container's
// attach) reaches the server over loopback, where there is no link to
// share and no loss to react to. A congestion control that paces, as BBR
// does, still meters every segment out: without the fq qdisc (loopback
// has none) the kernel releases a socket's segments from a
// high-resolution timer, each an interrupt, and on a VM a VM exit. (`ss
// -tmi` under 1 MiB reads also showed BBR's window at 26 segments, 1.7
// MB in flight, with 2.6 MB queued behind it; cubic's grew to 73.)
// Measured on this development VM with the system's default set to
// bbr (fio, 1 MiB sequential reads at QD8 after the suite's write
// history, eight interleaved runs of each): 2,892-3,144 MB/s with the
// server's socket on cubic in seven runs of eight, 2,098-2,600 MB/s on
// bbr; 381 against 461 µs of server CPU per MiB, and the profile's
// interrupt-enable points (where the timer and wake-up work is charged)
// fell from 9.3% to 3.7% of the server's CPU. The client's own socket
// (bbr either way) mattered little: with the system's default set to
// cubic and the server's socket to bbr, 2,403-2,654 MB/s.
//
// So a connection whose peer is a loopback address is set to the first
// of the server's choice and reno (built into every kernel and allowed
// to unprivileged processes) that the kernel accepts; other connections
// keep the system's default, chosen by whoever runs the network.

// congestionFallback is tried when Server.LoopbackCongestion is refused
// (not built, not allowed to this process): it never paces either.
const congestionFallback = "reno"

// isLoopback reports whether nc's peer is a loopback address.
func isLoopback(nc net.Conn) bool {
	a, ok := nc.RemoteAddr().(*net.TCPAddr)
	return ok && a.IP.IsLoopback()
}

// tuneCongestion sets the congestion control of nc, a loopback TCP
// connection, to want or else congestionFallback. It returns the last
// error when the kernel refused both; a connection that is not TCP is
// left as it is.
func tuneCongestion(nc net.Conn, want string) error {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	var err error
	for _, name := range []string{want, congestionFallback} {
		if err = setCongestion(tc, name); err == nil {
			return nil
		}
	}
	return err
}
