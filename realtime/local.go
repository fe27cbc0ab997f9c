package realtime

// DeliverLocal hands a sequenced publication (Seq > 0) to this replica's sockets of
// user only, as if the broker had brought it; an ephemeral one is ignored. It is for
// events another process committed to the log History reads but published where this
// hub does not listen (one SQLite file shared by a second server or `evo mcp`). The
// user's sequencer drops a seq it has handed on already, so an event that also comes
// by Publish or the broker reaches each socket once.
func (h *Hub) DeliverLocal(user string, p Publication) {
	if p.Seq > 0 {
		h.deliver(user, p)
	}
}
