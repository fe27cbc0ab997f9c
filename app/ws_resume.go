package app

import (
	"os"
	"strconv"

	"github.com/evotodo/evo/store"
)

// sinceKey holds the ?since of a socket (Locals): a resume at connect.
const sinceKey = "ws_since"

// parseSinceQuery reads /ws?since=N: the last seq the client saw.
func parseSinceQuery(v string) (int64, error) {
	since, err := strconv.ParseInt(v, 10, 64)
	if err != nil || since < 0 || v[0] == '+' {
		return 0, store.FieldError("since", "since must be the last seq you saw, a non-negative integer such as 12, got %q", v)
	}
	return since, nil
}

// replicaID is REPLICA_ID, or the host name and port: the name sockets learn
// in hello, to tell which replica they are on.
func replicaID(cfg Config, port int) string {
	if cfg.ReplicaID != "" {
		return cfg.ReplicaID
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return host + ":" + strconv.Itoa(port)
}
