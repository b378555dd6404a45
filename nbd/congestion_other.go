//go:build !linux

package nbd

import (
	"errors"
	"net"
)

// setCongestion: only Linux lets a socket choose its congestion control.
func setCongestion(tc *net.TCPConn, name string) error {
	return errors.New("nbd: choosing a congestion control needs Linux")
}
