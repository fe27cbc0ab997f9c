package realtime

// WebSocket close codes sent by the hub, each with its reason text. As in centrifuge's
// disconnect.go, codes 3000-3499 mean the client should reconnect (with backoff), codes
// 3500-3999 mean it should not reconnect with the same request. See [ShouldReconnect].
const (
	// CloseGoingAway is sent to every socket when the replica shuts down: reconnect.
	CloseGoingAway = 1001
	// ReasonGoingAway is the reason text of [CloseGoingAway].
	ReasonGoingAway = "going away"

	// CloseMessageTooBig is sent by fasthttp/websocket itself, not by the hub, when an
	// inbound frame exceeds Config.MaxMessageSize. The client should not resend it.
	CloseMessageTooBig = 1009

	// CloseInternalError is sent when the server failed (a FrameHandler panicked, the
	// broker or the event log could not be reached at connect time): reconnect later.
	CloseInternalError = 1011
	// ReasonInternalError is the reason text of [CloseInternalError].
	ReasonInternalError = "internal error"

	// CloseTokenExpired is sent when the socket's token expired and no fresh one was
	// accepted (Client.SetExpires): reconnect with a fresh token.
	CloseTokenExpired = 3000
	// ReasonTokenExpired is the reason text of [CloseTokenExpired].
	ReasonTokenExpired = "token expired"

	// CloseSlowConsumer is sent when the socket's send queue overflowed (the client does
	// not read fast enough): reconnect and resume.
	CloseSlowConsumer = 3001
	// ReasonSlowConsumer is the reason text of [CloseSlowConsumer].
	ReasonSlowConsumer = "slow consumer"

	// CloseReplicaFull is sent right after the upgrade when the replica holds
	// Config.MaxConns sockets: reconnect, possibly to another replica.
	CloseReplicaFull = 3002
	// ReasonReplicaFull is the reason text of [CloseReplicaFull].
	ReasonReplicaFull = "replica full"

	// CloseBadRequest is sent when the client broke the protocol (a resume whose since is
	// not a non-negative integer, or a repeated resume claiming events this socket never
	// sent): do not reconnect with the same behaviour.
	CloseBadRequest = 3500
	// ReasonBadRequest is the reason text of [CloseBadRequest].
	ReasonBadRequest = "bad request"

	// CloseTooManyConnections is sent right after the upgrade when the user already has
	// Config.MaxConnsPerUser sockets on this replica: do not reconnect.
	CloseTooManyConnections = 3501
	// ReasonTooManyConnections is the reason text of [CloseTooManyConnections].
	ReasonTooManyConnections = "too many connections"

	// CloseForbidden is sent when the client is not allowed to go on, for
	// example an auth frame whose token is for another user: do not reconnect.
	CloseForbidden = 3502
	// ReasonForbidden is the reason text of [CloseForbidden].
	ReasonForbidden = "forbidden"
)

// ShouldReconnect reports whether a client whose socket was closed with code should
// reconnect: 1001, 1006 (abnormal closure), 1011-1014 and 3000-3499 (and 4000-4499, kept
// for the application) yes; 1000, 1009, 3500-3999 (and 4500-4999) no.
func ShouldReconnect(code int) bool {
	switch {
	case code == 1001 || code == 1006:
		return true
	case code >= 1011 && code <= 1014:
		return true
	case code >= 3000 && code < 3500, code >= 4000 && code < 4500:
		return true
	}
	return false
}
