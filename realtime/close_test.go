package realtime

import "testing"

func TestShouldReconnect(t *testing.T) {
	tests := []struct {
		name string
		code int
		want bool
	}{
		{"GoingAway", CloseGoingAway, true},
		{"Abnormal", 1006, true},
		{"Internal", CloseInternalError, true},
		{"TokenExpired", CloseTokenExpired, true},
		{"Slow", CloseSlowConsumer, true},
		{"ReplicaFull", CloseReplicaFull, true},
		{"Normal", 1000, false},
		{"TooBig", CloseMessageTooBig, false},
		{"BadRequest", CloseBadRequest, false},
		{"TooManyConnections", CloseTooManyConnections, false},
		{"Forbidden", CloseForbidden, false},
		{"AppReconnect", 4000, true},
		{"AppFinal", 4500, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ShouldReconnect(tt.code); got != tt.want {
				t.Errorf("ShouldReconnect(%d) = %v, want %v", tt.code, got, tt.want)
			}
		})
	}
}
