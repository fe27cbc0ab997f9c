package app

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/evotodo/evo/store"
)

// statuses maps store error codes to HTTP statuses.
var statuses = map[string]int{
	store.CodeBadRequest:   http.StatusBadRequest,
	store.CodeInvalid:      http.StatusUnprocessableEntity,
	store.CodeNotFound:     http.StatusNotFound,
	store.CodeConflict:     http.StatusConflict,
	store.CodeUnauthorized: http.StatusUnauthorized,
	store.CodeForbidden:    http.StatusForbidden,
	store.CodeRateLimited:  http.StatusTooManyRequests,
	store.CodeUnavailable:  http.StatusServiceUnavailable,
	store.CodeInternal:     http.StatusInternalServerError,
}

// ErrorBody is the JSON body of every error response. detail is the field
// the seed's clients read.
type ErrorBody struct {
	Detail string `json:"detail"`
	Code   string `json:"code"`
	Field  string `json:"field,omitempty"`
}

// errorBody returns the status and body for err. Fiber's own errors (unknown
// route, body too large, ...) keep their status.
func errorBody(err error) (int, ErrorBody) {
	var fe *fiber.Error
	if errors.As(err, &fe) {
		code := strings.ReplaceAll(strings.ToLower(http.StatusText(fe.Code)), " ", "_")
		if fe.Code == http.StatusNotFound {
			code = store.CodeNotFound
		}
		return fe.Code, ErrorBody{Detail: fe.Message, Code: code}
	}
	code := store.ErrorCode(err)
	return statuses[code], ErrorBody{Detail: store.ErrorMessage(err), Code: code, Field: store.ErrorField(err)}
}

// handleError is Fiber's ErrorHandler: every error a handler returns is
// answered here. Internal errors are logged in full; the client reads
// "internal error".
func (s *Server) handleError(c *fiber.Ctx, err error) error {
	status, body := errorBody(err)
	switch {
	case status >= 500 && body.Code != store.CodeUnavailable:
		s.log.Error("request failed", requestAttrs(c), slog.Any("error", err))
	case status == http.StatusServiceUnavailable:
		s.log.Warn("dependency unavailable", requestAttrs(c), slog.Any("error", err))
	}
	return c.Status(status).JSON(body)
}

// requestAttrs groups what identifies a request in a log line. The query
// string is left out: browsers put tokens there.
func requestAttrs(c *fiber.Ctx) slog.Attr {
	attrs := make([]slog.Attr, 3, 4)
	attrs[0] = slog.String("method", c.Method())
	attrs[1] = slog.String("path", c.Path())
	attrs[2] = slog.Any("request_id", c.Locals(requestIDKey))
	if uid, ok := c.Locals(userKey).(string); ok {
		attrs = append(attrs, slog.String("user_id", uid))
	}
	return slog.Attr{Key: "request", Value: slog.GroupValue(attrs...)}
}
