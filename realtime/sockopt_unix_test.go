//go:build unix

package realtime

import "syscall"

// smallRcvBuf is a net.Dialer Control function shrinking the socket's receive buffer, so
// that a client that does not read fills the TCP buffers quickly.
func smallRcvBuf(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
	})
	if err != nil {
		return err
	}
	return serr
}
