package store

import (
	"errors"
	"fmt"
)

// Error codes shared by every surface (HTTP, WebSocket, MCP). app maps them to
// HTTP statuses in one table.
const (
	CodeBadRequest   = "bad_request"  // the request could not be read (malformed JSON, ...)
	CodeInvalid      = "invalid"      // the request was read but a value is not acceptable
	CodeNotFound     = "not_found"    // missing, or owned by someone else
	CodeConflict     = "conflict"     // the change collides with the current state
	CodeUnauthorized = "unauthorized" // no valid credentials
	CodeForbidden    = "forbidden"    // valid credentials, not allowed
	CodeRateLimited  = "rate_limited" // too many requests
	CodeUnavailable  = "unavailable"  // a dependency (database, JWKS, Redis) is down
	CodeInternal     = "internal"     // a bug or an unexpected failure
)

// Error is the domain error. Message is safe to show to the client; Field
// names the offending input field, if any.
type Error struct {
	Code    string
	Message string
	Field   string
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s (field %s)", e.Code, e.Message, e.Field)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Errorf returns an *Error with the code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// FieldError returns an invalid-input error naming field.
func FieldError(field, format string, args ...any) *Error {
	return &Error{Code: CodeInvalid, Field: field, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, "" for nil
// and CodeInternal for any other error.
func ErrorCode(err error) string {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Code
	}
	return CodeInternal
}

// ErrorMessage returns the client-safe message of err: the *Error's message,
// or "internal error" for anything else.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// ErrorField returns the field named by err, if any.
func ErrorField(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Field
	}
	return ""
}

// ErrUnavailable is wrapped by stores when the database cannot be reached.
var ErrUnavailable = &Error{Code: CodeUnavailable, Message: "database unavailable"}

// ErrUserNotFound is wrapped by stores when a change names a user that does not exist
// (deleted since its token was checked).
var ErrUserNotFound = &Error{Code: CodeNotFound, Message: "user not found"}
