package nbd

import (
	"fmt"
	"net"
	"syscall"
)

// setCongestion sets tc's congestion control (TCP_CONGESTION).
func setCongestion(tc *net.TCPConn, name string) error {
	rc, err := tc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptString(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CONGESTION, name)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("nbd: congestion control %q: %w", name, serr)
	}
	return nil
}
