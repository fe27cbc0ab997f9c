//go:build !unix

package realtime

import "syscall"

// smallRcvBuf does nothing here: the slow-consumer test then needs more data to fill
// the TCP buffers.
func smallRcvBuf(_, _ string, _ syscall.RawConn) error { return nil }
