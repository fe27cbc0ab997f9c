package app

import (
	"github.com/gofiber/fiber/v2"
)

// maxRequestIDLen bounds a client's X-Request-ID.
const maxRequestIDLen = 128

// validRequestID reports whether a client's X-Request-ID is echoed and logged
// as it is: 1-128 characters of A-Z, a-z, 0-9 and ._:-.
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// baseHeaders runs before the request id middleware: an X-Request-ID the
// client sent that is not validRequestID is dropped (a fresh one is made), and
// every answer says X-Content-Type-Options: nosniff (JSON is never sniffed as HTML).
func baseHeaders(c *fiber.Ctx) error {
	if id := c.Get(fiber.HeaderXRequestID); id != "" && !validRequestID(id) {
		c.Request().Header.Del(fiber.HeaderXRequestID)
	}
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	return c.Next()
}
