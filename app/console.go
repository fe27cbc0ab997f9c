package app

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"log/slog"
	"net/mail"
	"path"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/evotodo/evo/store"
)

// web holds the console: a page, a script and a style sheet, served as they
// are (no build step).
//
//go:embed web
var web embed.FS

// devTokenTTL is how long a token from POST /api/dev/token lives; the
// console fetches a fresh one a minute before it expires.
const devTokenTTL = time.Hour

// consoleTypes are the content types of the console's files, by extension:
// fixed here rather than read from the host's mime.types.
var consoleTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// signInMeta is the tag of index.html that tells the console how to sign in:
// "token" (paste one) unless the dev issuer is on ("dev").
const signInMeta = `<meta name="evo-sign-in" content="token">`

// safeHost matches a Host header that may be written into the CSP.
var safeHost = regexp.MustCompile(`^[A-Za-z0-9.\-]+(:[0-9]+)?$|^\[[0-9A-Fa-f:.]+\](:[0-9]+)?$`)

// consoleFile is one embedded file, ready to serve.
type consoleFile struct {
	body  []byte
	ctype string
	etag  string
}

// mountConsole serves the web console at / (index.html) and its other files
// at /<name>, none of them behind auth, and POST /api/dev/token, which is
// there only when the dev issuer is on (a 404 otherwise). Call it before the
// /api group so that the token route does not pass through authenticate.
func (s *Server) mountConsole(app *fiber.App) {
	files, err := fs.Sub(web, "web")
	if err != nil {
		panic(err) // the embed directive guarantees web/
	}
	mode := "token"
	if s.issuer != nil {
		mode = "dev"
	}
	err = fs.WalkDir(files, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(files, name)
		if err != nil {
			return err
		}
		route := "/" + name
		if name == "index.html" {
			route = "/"
			body = bytes.Replace(body, []byte(signInMeta),
				[]byte(strings.Replace(signInMeta, `"token"`, `"`+mode+`"`, 1)), 1)
		}
		sum := sha256.Sum256(body)
		f := &consoleFile{
			body:  body,
			ctype: consoleTypes[path.Ext(name)],
			etag:  `"` + hex.EncodeToString(sum[:12]) + `"`,
		}
		if f.ctype == "" {
			f.ctype = fiber.MIMEOctetStream
		}
		app.Get(route, f.serve)
		return nil
	})
	if err != nil {
		panic(err) // reading an embed.FS does not fail
	}

	if s.issuer != nil {
		app.Post("/api/dev/token", s.withTimeout, s.devToken)
	} else {
		// Without this the /api group would answer 401: the route must not
		// seem to exist at all.
		app.Post("/api/dev/token", func(*fiber.Ctx) error {
			return store.Errorf(store.CodeNotFound, "dev sign-in is off (BETTER_AUTH_URL is set, or ENVIRONMENT=production): get a token from Better Auth")
		})
	}
}

// serve answers GET and HEAD with the file. Nothing is fingerprinted, so
// browsers revalidate every time (no-cache) and get a 304 while the ETag,
// a hash of the content, matches.
func (f *consoleFile) serve(c *fiber.Ctx) error {
	h := &c.Response().Header
	h.Set(fiber.HeaderCacheControl, "no-cache")
	h.Set(fiber.HeaderETag, f.etag)
	h.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	h.Set(fiber.HeaderReferrerPolicy, "no-referrer")
	h.Set(fiber.HeaderXFrameOptions, "DENY")
	h.Set(fiber.HeaderContentSecurityPolicy, consoleCSP(string(c.Request().Host())))
	if etagMatches(c.Get(fiber.HeaderIfNoneMatch), f.etag) {
		return c.SendStatus(fiber.StatusNotModified)
	}
	c.Set(fiber.HeaderContentType, f.ctype)
	return c.Send(f.body)
}

// etagMatches reports whether an If-None-Match header names etag.
func etagMatches(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}

// consoleCSP is the console's Content-Security-Policy: its own scripts,
// styles and images only, and connections (fetch and WebSocket) to its own
// origin only. 'self' covers ws: and wss: in CSP 3 browsers; the host is
// listed for the others when it is a plain host[:port].
func consoleCSP(host string) string {
	connect := "'self'"
	if safeHost.MatchString(host) {
		connect += " ws://" + host + " wss://" + host
	}
	return "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src " + connect +
		"; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}

// DevToken is the body of POST /api/dev/token.
type DevToken struct {
	Token     string     `json:"token"`
	ExpiresAt time.Time  `json:"expires_at"`
	User      store.User `json:"user"`
}

// devToken is POST /api/dev/token {"email": "...", "name": "..."}: the
// console's dev sign-in, `evo token` over HTTP. It creates the user if
// missing and returns a token for it. Dev mode only: whoever reaches the
// port can sign in as anyone, as with the dev issuer's other tokens.
func (s *Server) devToken(c *fiber.Ctx) error {
	// A JSON content type makes a cross-site form post impossible without
	// a CORS preflight.
	if !strings.HasPrefix(c.Get(fiber.HeaderContentType), fiber.MIMEApplicationJSON) {
		return store.Errorf(store.CodeBadRequest, "Content-Type must be application/json")
	}
	var in struct {
		Email string `json:"email"`
		Name  string `json:"name"`
	}
	if err := decodeJSON(c.Body(), &in); err != nil {
		return err
	}
	email, name, err := devUser(in.Email, in.Name)
	if err != nil {
		return err
	}
	u, err := s.db.EnsureUser(c.UserContext(), email, name)
	if err != nil {
		return err
	}
	// Taken before the token is signed: never later than its exp.
	expires := time.Now().Add(devTokenTTL).UTC().Truncate(time.Second)
	tok, err := s.issuer.Token(u, devTokenTTL)
	if err != nil {
		return err
	}
	s.log.Info("dev token issued", slog.String("user_id", u.ID))
	return c.JSON(DevToken{Token: tok, ExpiresAt: expires, User: u})
}

// devUser validates the dev sign-in's email and name; the name defaults to
// the email's local part, as with `evo token`.
func devUser(email, name string) (string, string, error) {
	email = strings.TrimSpace(email)
	if email == "" {
		return "", "", store.FieldError("email", "email is required")
	}
	if len(email) > 254 {
		return "", "", store.FieldError("email", "email must be at most 254 characters, got %d", len(email))
	}
	if a, err := mail.ParseAddress(email); err != nil || a.Address != email || a.Name != "" {
		return "", "", store.FieldError("email", "email must be an address like ada@example.com")
	}
	name = strings.TrimSpace(name)
	if name == "" {
		name, _, _ = strings.Cut(email, "@")
	}
	if n := utf8.RuneCountInString(name); n > 100 {
		return "", "", store.FieldError("name", "name must be at most 100 characters, got %d", n)
	}
	if strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", "", store.FieldError("name", "name must not contain control characters")
	}
	return email, name, nil
}
