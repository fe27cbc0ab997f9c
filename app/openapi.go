package app

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// The API's OpenAPI 3.1 document, written by hand next to the routes it
// describes: openapi_test.go fails when a route is missing from it (or it
// lists one that does not exist) and validates real responses against its
// schemas. Its schemas are plain JSON Schema 2020-12 (jsonSchemaDialect).
//
//go:embed openapi.json
var openAPIDoc []byte

// mountOpenAPI serves GET /openapi.json, the document, and GET /docs, the
// document rendered as one HTML page. The page is rendered here, once, with
// no script and no external resource: it works offline and behind a strict
// CSP, where a JavaScript viewer from a CDN would not.
func (s *Server) mountOpenAPI(app *fiber.App) {
	doc := withVersion(openAPIDoc, Version)
	page, style, err := renderDocs(doc)
	if err != nil {
		panic(fmt.Sprintf("render openapi.json: %v", err)) // the embedded file is tested
	}
	sum := sha256.Sum256([]byte(style))
	csp := "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) +
		"'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
	app.Get("/openapi.json", func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSONCharsetUTF8)
		c.Set(fiber.HeaderCacheControl, "no-cache")
		return c.Send(doc)
	})
	app.Get("/docs", func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
		c.Set(fiber.HeaderCacheControl, "no-cache")
		c.Set(fiber.HeaderContentSecurityPolicy, csp)
		c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
		return c.Send(page)
	})
	// The Python backend served ReDoc here; its users' bookmarks land on /docs.
	app.Get("/redoc", func(c *fiber.Ctx) error {
		return c.Redirect("/docs", fiber.StatusMovedPermanently)
	})
}

// withVersion returns doc with info.version set to v (the build's Version,
// as `evo version` and MCP serverInfo say), the rest byte for byte.
func withVersion(doc []byte, v string) []byte {
	var d oasDoc
	if err := json.Unmarshal(doc, &d); err != nil {
		return doc // the embedded file is tested
	}
	quoted, _ := json.Marshal(v)
	return bytes.Replace(doc, fmt.Appendf(nil, `"version": %q`, d.Info.Version), append([]byte(`"version": `), quoted...), 1)
}

// oasDoc is what the docs page reads of the document.
type oasDoc struct {
	Info struct {
		Title       string `json:"title"`
		Version     string `json:"version"`
		Summary     string `json:"summary"`
		Description string `json:"description"`
	} `json:"info"`
	Tags []struct {
		Name        string `json:"name"`
		Description string `json:"description"`
	} `json:"tags"`
	Paths      map[string]map[string]oasOperation `json:"paths"`
	Components struct {
		Schemas    map[string]map[string]any `json:"schemas"`
		Responses  map[string]oasResponse    `json:"responses"`
		Parameters map[string]oasParameter   `json:"parameters"`
	} `json:"components"`
}

type oasOperation struct {
	Tags        []string               `json:"tags"`
	Summary     string                 `json:"summary"`
	Description string                 `json:"description"`
	Security    []map[string][]string  `json:"security"`
	Parameters  []oasParameter         `json:"parameters"`
	RequestBody *oasBody               `json:"requestBody"`
	Responses   map[string]oasResponse `json:"responses"`
	DevOnly     bool                   `json:"x-evo-dev-only"`
}

type oasParameter struct {
	Ref         string         `json:"$ref"`
	Name        string         `json:"name"`
	In          string         `json:"in"`
	Required    bool           `json:"required"`
	Description string         `json:"description"`
	Schema      map[string]any `json:"schema"`
}

type oasBody struct {
	Required bool                    `json:"required"`
	Content  map[string]oasMediaType `json:"content"`
}

type oasMediaType struct {
	Schema map[string]any `json:"schema"`
}

type oasResponse struct {
	Ref         string                  `json:"$ref"`
	Description string                  `json:"description"`
	Headers     map[string]oasHeader    `json:"headers"`
	Content     map[string]oasMediaType `json:"content"`
}

type oasHeader struct {
	Description string         `json:"description"`
	Schema      map[string]any `json:"schema"`
}

// methodOrder sorts an operation's methods as the README lists them.
var methodOrder = []string{"get", "post", "put", "patch", "delete"}

// docsStyle is the page's only style; the CSP allows it by its hash.
const docsStyle = `body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1d2330}
code{font:13px ui-monospace,monospace;background:#f1f3f7;padding:0 .25em;border-radius:3px}
h2{border-bottom:1px solid #d8dce4;padding-bottom:.2em;margin-top:2.5em}h3{margin:1.8em 0 .3em}
.m{display:inline-block;min-width:4.2em;font:600 12px ui-monospace,monospace;text-transform:uppercase}
.get{color:#1a7f37}.post{color:#0550ae}.put,.patch{color:#9a6700}.delete{color:#cf222e}
table{border-collapse:collapse;width:100%;margin:.4em 0}td,th{border:1px solid #d8dce4;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}ul.s{margin:.2em 0;padding-left:1.2em}.c{color:#57606a;font-size:13px}.toc li{list-style:none}`

var docsPage = template.Must(template.New("docs").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{{.Title}} API {{.Version}}</title><style>{{.Style}}</style></head><body>
<h1>{{.Title}} API <span class="c">{{.Version}}</span></h1>
<p>{{.Summary}}</p><p>{{.Description}}</p>
<p>The machine-readable document: <a href="/openapi.json"><code>/openapi.json</code></a> (OpenAPI 3.1).</p>
<ul class="toc">{{range .Groups}}{{range .Ops}}<li><a href="#{{.Anchor}}"><span class="m {{.Method}}">{{.Method}}</span> <code>{{.Path}}</code></a> {{.Summary}}</li>{{end}}{{end}}</ul>
{{range .Groups}}<h2 id="tag-{{.Name}}">{{.Name}}</h2><p>{{.Description}}</p>
{{range .Ops}}<h3 id="{{.Anchor}}"><span class="m {{.Method}}">{{.Method}}</span> <code>{{.Path}}</code> {{.Summary}}</h3>
{{if .Description}}<p>{{.Description}}</p>{{end}}<p class="c">{{.Auth}}</p>
{{if .Params}}<table><tr><th>parameter</th><th>in</th><th>schema</th><th></th></tr>{{range .Params}}<tr><td><code>{{.Name}}</code>{{if .Required}} (required){{end}}</td><td>{{.In}}</td><td>{{.Schema}}</td><td>{{.Description}}</td></tr>{{end}}</table>{{end}}
{{range .Body}}<p>Request body (<code>{{.Type}}</code>): {{.Schema}}</p>{{end}}
<table><tr><th>status</th><th>answer</th></tr>{{range .Responses}}<tr><td>{{.Status}}</td><td>{{.Description}}{{range .Content}}<br><code>{{.Type}}</code>: {{.Schema}}{{end}}{{range .Headers}}<br>header <code>{{.Name}}</code>: {{.Description}}{{end}}</td></tr>{{end}}</table>
{{end}}{{end}}
<h2 id="schemas">Schemas</h2>
{{range .Schemas}}<h3 id="schema-{{.Name}}"><code>{{.Name}}</code></h3>{{.Body}}{{end}}
</body></html>
`))

type docsData struct {
	Title, Version, Summary string
	Description             template.HTML
	Style                   template.CSS
	Groups                  []docsGroup
	Schemas                 []docsSchema
}

type docsGroup struct {
	Name        string
	Description template.HTML
	Ops         []docsOp
}

type docsOp struct {
	Method, Path, Anchor, Summary, Auth string
	Description                         template.HTML
	Params                              []docsParam
	Body                                []docsContent
	Responses                           []docsResponse
}

type docsParam struct {
	Name, In    string
	Required    bool
	Schema      template.HTML
	Description template.HTML
}

type docsContent struct {
	Type   string
	Schema template.HTML
}

type docsResponse struct {
	Status      string
	Description template.HTML
	Content     []docsContent
	Headers     []docsParam
}

type docsSchema struct {
	Name string
	Body template.HTML
}

// renderDocs renders the document as the /docs page, and returns the page's
// style for the CSP.
func renderDocs(raw []byte) (page []byte, style string, err error) {
	var doc oasDoc
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, "", err
	}
	data := docsData{Title: doc.Info.Title, Version: doc.Info.Version, Summary: doc.Info.Summary,
		Description: prose(doc.Info.Description), Style: template.CSS(docsStyle)}
	groups := map[string]*docsGroup{}
	for _, t := range doc.Tags {
		data.Groups = append(data.Groups, docsGroup{Name: t.Name, Description: prose(t.Description)})
	}
	for i := range data.Groups {
		groups[data.Groups[i].Name] = &data.Groups[i]
	}
	for _, path := range slices.Sorted(maps.Keys(doc.Paths)) {
		for _, method := range methodOrder {
			o, ok := doc.Paths[path][method]
			if !ok {
				continue
			}
			if len(o.Tags) == 0 || groups[o.Tags[0]] == nil {
				return nil, "", fmt.Errorf("%s %s: no tag, or a tag not listed in tags", method, path)
			}
			g := groups[o.Tags[0]]
			g.Ops = append(g.Ops, renderOp(&doc, method, path, o))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(doc.Components.Schemas)) {
		data.Schemas = append(data.Schemas, docsSchema{Name: name, Body: schemaHTML(doc.Components.Schemas[name], true)})
	}
	var b bytes.Buffer
	if err := docsPage.Execute(&b, data); err != nil {
		return nil, "", err
	}
	return b.Bytes(), docsStyle, nil
}

func renderOp(doc *oasDoc, method, path string, o oasOperation) docsOp {
	op := docsOp{Method: method, Path: path, Summary: o.Summary, Description: prose(o.Description),
		Anchor: method + strings.NewReplacer("/", "-", "{", "", "}", "").Replace(path)}
	switch {
	case len(o.Security) == 0:
		op.Auth = "No authentication."
	case slices.ContainsFunc(o.Security, func(m map[string][]string) bool { return len(m) == 0 }):
		op.Auth = "Authentication optional (see the description)."
	default:
		op.Auth = "Needs Authorization: Bearer <jwt>."
	}
	if o.DevOnly {
		op.Auth += " Development mode only."
	}
	for _, p := range o.Parameters {
		if name, ok := strings.CutPrefix(p.Ref, "#/components/parameters/"); ok {
			p = doc.Components.Parameters[name]
		}
		op.Params = append(op.Params, docsParam{Name: p.Name, In: p.In, Required: p.Required,
			Schema: schemaHTML(p.Schema, false), Description: prose(p.Description)})
	}
	if o.RequestBody != nil {
		op.Body = contents(o.RequestBody.Content)
	}
	for _, status := range slices.Sorted(maps.Keys(o.Responses)) {
		r := o.Responses[status]
		if name, ok := strings.CutPrefix(r.Ref, "#/components/responses/"); ok {
			r = doc.Components.Responses[name]
		}
		dr := docsResponse{Status: status, Description: prose(r.Description), Content: contents(r.Content)}
		for _, h := range slices.Sorted(maps.Keys(r.Headers)) {
			dr.Headers = append(dr.Headers, docsParam{Name: h, Description: prose(r.Headers[h].Description)})
		}
		op.Responses = append(op.Responses, dr)
	}
	return op
}

func contents(c map[string]oasMediaType) []docsContent {
	var out []docsContent
	for _, t := range slices.Sorted(maps.Keys(c)) {
		out = append(out, docsContent{Type: t, Schema: schemaHTML(c[t].Schema, false)})
	}
	return out
}

// codeSpan matches the `code` of descriptions (after HTML escaping).
var codeSpan = regexp.MustCompile("`([^`]+)`")

// prose is a description as HTML: escaped, with `code` spans.
func prose(s string) template.HTML {
	return template.HTML(codeSpan.ReplaceAllString(template.HTMLEscapeString(s), "<code>$1</code>"))
}

// schemaHTML renders a JSON Schema as HTML: a reference as a link, an object
// (when top, or inline) as a list of its properties.
func schemaHTML(s map[string]any, top bool) template.HTML {
	if len(s) == 0 {
		return "any"
	}
	if r, ok := s["$ref"].(string); ok {
		name := strings.TrimPrefix(r, "#/components/schemas/")
		return template.HTML(`<a href="#schema-` + template.HTMLEscapeString(name) + `"><code>` + template.HTMLEscapeString(name) + `</code></a>`)
	}
	var b strings.Builder
	b.WriteString(string(typeSummary(s)))
	if d, ok := s["description"].(string); ok && top {
		b.WriteString("<br>" + string(prose(d)))
	}
	if alts, ok := s["oneOf"].([]any); ok {
		b.WriteString(`<ul class="s">`)
		for _, a := range alts {
			if m, ok := a.(map[string]any); ok {
				b.WriteString("<li>" + string(schemaHTML(m, true)) + "</li>")
			}
		}
		b.WriteString("</ul>")
	}
	if props, ok := s["properties"].(map[string]any); ok {
		required := map[string]bool{}
		if rs, ok := s["required"].([]any); ok {
			for _, r := range rs {
				required[fmt.Sprint(r)] = true
			}
		}
		keys := slices.Collect(maps.Keys(props))
		sort.Strings(keys)
		b.WriteString(`<ul class="s">`)
		for _, k := range keys {
			p, _ := props[k].(map[string]any)
			b.WriteString("<li><code>" + template.HTMLEscapeString(k) + "</code>")
			if required[k] {
				b.WriteString(" (required)")
			}
			b.WriteString(": " + string(schemaHTML(p, false)))
			if d, ok := p["description"].(string); ok {
				b.WriteString(` <span class="c">` + string(prose(d)) + "</span>")
			}
			b.WriteString("</li>")
		}
		b.WriteString("</ul>")
	}
	return template.HTML(b.String())
}

// typeSummary is a schema's type and constraints in one line.
func typeSummary(s map[string]any) template.HTML {
	var parts []string
	switch t := s["type"].(type) {
	case string:
		parts = append(parts, t)
	case []any:
		var ts []string
		for _, x := range t {
			ts = append(ts, fmt.Sprint(x))
		}
		parts = append(parts, strings.Join(ts, " or "))
	}
	if items, ok := s["items"].(map[string]any); ok {
		parts = append(parts, "of "+string(schemaHTML(items, false)))
	}
	if c, ok := s["const"]; ok {
		parts = append(parts, "<code>"+template.HTMLEscapeString(jsonText(c))+"</code>")
	}
	if e, ok := s["enum"].([]any); ok {
		var vs []string
		for _, v := range e {
			vs = append(vs, "<code>"+template.HTMLEscapeString(jsonText(v))+"</code>")
		}
		parts = append(parts, "one of "+strings.Join(vs, ", "))
	}
	for _, k := range []string{"format", "minLength", "maxLength", "minimum", "maximum", "default", "pattern"} {
		if v, ok := s[k]; ok {
			parts = append(parts, k+" "+template.HTMLEscapeString(jsonText(v)))
		}
	}
	if _, ok := s["oneOf"]; ok && len(parts) == 0 {
		parts = append(parts, "one of")
	}
	if len(parts) == 0 {
		return "any"
	}
	return template.HTML(strings.Join(parts, ", "))
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
