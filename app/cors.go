package app

import (
	"net"
	"net/url"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/cors"
)

// CORS_ORIGINS, one matcher for CORS and the WebSocket origin check: an entry
// and a request's Origin are compared in one normal form (lower case, no
// trailing slash, no default port), and "scheme://*.example.com" matches every
// subdomain of example.com (not example.com itself) on that scheme and port.
// LoadConfig refuses an entry this cannot match.

// originMatcher is CORS_ORIGINS, normalised (Config.origins).
type originMatcher struct {
	exact    map[string]bool
	wildcard []string // "https://" + "*" + ".example.com" as the prefix and suffix around "*"
}

// normalizeOrigin returns o as scheme://host[:port] in lower case, without a
// trailing slash or a default port (:80 for http, :443 for https), and
// whether o is an origin at all: a scheme and a host, no user, path, query or
// fragment. With wildcard, the host may start with "*." (a CORS_ORIGINS
// entry); a request's Origin never may.
func normalizeOrigin(o string, wildcard bool) (string, bool) {
	rest, star := o, false
	if wildcard {
		if i := strings.Index(o, "://*."); i >= 0 {
			rest, star = o[:i+3]+o[i+4:], true
		}
	}
	u, err := url.Parse(rest)
	if err != nil || u.Scheme == "" || u.Host == "" || u.User != nil || u.Opaque != "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" ||
		strings.ContainsAny(u.Host, "*/\\ ") {
		return "", false
	}
	host := strings.ToLower(u.Host)
	if h, port, err := net.SplitHostPort(host); err == nil {
		scheme := strings.ToLower(u.Scheme)
		if port == "" || (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
			host = h
			if strings.Contains(h, ":") {
				host = "[" + h + "]"
			}
		}
	}
	if star {
		if !strings.HasPrefix(host, ".") || len(host) < 2 {
			return "", false
		}
		host = "*" + host
	}
	return strings.ToLower(u.Scheme) + "://" + host, true
}

// newOriginMatcher matches the origins, each normalised by normalizeOrigin
// (entries it refuses are left out: LoadConfig reports them).
func newOriginMatcher(origins []string) originMatcher {
	m := originMatcher{exact: map[string]bool{}}
	for _, o := range origins {
		n, ok := normalizeOrigin(o, true)
		switch {
		case !ok:
		case strings.Contains(n, "://*."):
			m.wildcard = append(m.wildcard, n)
		default:
			m.exact[n] = true
		}
	}
	return m
}

// allowed reports whether a request's Origin is one of the origins.
func (m originMatcher) allowed(origin string) bool {
	o, ok := normalizeOrigin(origin, false)
	if !ok {
		return false
	}
	if m.exact[o] {
		return true
	}
	for _, w := range m.wildcard {
		prefix, suffix, _ := strings.Cut(w, "*")
		if len(o) > len(prefix)+len(suffix) && strings.HasPrefix(o, prefix) && strings.HasSuffix(o, suffix) &&
			!strings.Contains(o[len(prefix):len(o)-len(suffix)], ":") {
			return true
		}
	}
	return false
}

// cors answers CORS for CORS_ORIGINS, with credentials. A preflight from one
// of them may ask for any request header (Access-Control-Request-Headers is
// echoed, as the Python backend allowed); one from another origin gets neither
// Access-Control-Allow-Origin nor any other allowance.
func (s *Server) cors() fiber.Handler {
	h := cors.New(cors.Config{
		// Fiber's middleware with AllowOriginsFunc alone: AllowOrigins stays
		// empty (no static list, no "*"), and an empty AllowHeaders echoes the
		// requested headers.
		AllowOriginsFunc: s.cfg.origins.allowed,
		AllowCredentials: true,
		ExposeHeaders:    "X-Request-ID",
	})
	return func(c *fiber.Ctx) error {
		err := h(c)
		// Fiber echoes the requested headers whatever the origin; keep them
		// for allowed origins only. (A preflight ends in h: c.Next is not
		// called, so no handler's headers are touched.)
		if c.Method() == fiber.MethodOptions && c.Get(fiber.HeaderAccessControlRequestMethod) != "" &&
			len(c.Response().Header.Peek(fiber.HeaderAccessControlAllowOrigin)) == 0 {
			c.Response().Header.Del(fiber.HeaderAccessControlAllowHeaders)
			c.Response().Header.Del(fiber.HeaderAccessControlAllowMethods)
		}
		return err
	}
}
