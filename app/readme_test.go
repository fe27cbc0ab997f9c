package app

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode"

	"mvdan.cc/sh/v3/shell"

	"github.com/evotodo/evo/agent"
)

// TestREADMEChatExamples follows the README literally against a fresh
// server with the built-in agent: every shell block in order (the quick
// start's curl, the REST and WebSocket sections' changes, the chat section's
// wscat frame and curl messages), checking each chat answer against what the
// README shows after it (the tools it names, the first token, the start of
// the response). Then every example of the built-in agent's table must be
// understood as its row's command.
func TestREADMEChatExamples(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	r := &readmeRun{t: t, ts: startServer(t, "sqlite", nil), vars: map[string]string{}, sockets: map[string]*wsClient{}}
	// The sections a newcomer follows in order: from the quick start to the chat.
	start, end := bytes.Index(readme, []byte("## Quick start")), bytes.Index(readme, []byte("\n## MCP"))
	if start < 0 || end < start {
		t.Fatal("README: no quick start before the MCP section")
	}
	for _, block := range shellBlocks(string(readme[start:end])) {
		r.block(block)
	}
	if r.chats < 4 {
		t.Fatalf("ran %d chat examples, want the README's 4 or more", r.chats)
	}
	// Where the examples leave the list: the pick completed the newest milk task.
	status, body := r.ts.do(t, "GET", "/api/todos?is_complete=true", r.vars["TOKEN"], nil)
	if list := decode[TodoList](t, body); status != http.StatusOK || list.Total != 1 || list.Todos[0].Title != "buy milk" ||
		list.Todos[0].Description == nil || *list.Todos[0].Description != "2 litres" {
		t.Fatalf("completed todos after the examples: got %d %s", status, body)
	}

	for kind, examples := range builtinTable(t, string(readme)) {
		for _, ex := range examples {
			if got := agent.ParseIntent(ex).Kind; got != kind {
				t.Errorf("README's built-in agent example %q: understood as %s, want %s", ex, got, kind)
			}
		}
	}
}

// readmeRun runs a README's shell lines against ts, as a person would.
type readmeRun struct {
	t       *testing.T
	ts      *testServer
	vars    map[string]string    // shell variables: TOKEN, H, ID
	sockets map[string]*wsClient // by token
	chats   int
}

var (
	reFence     = regexp.MustCompile("(?s)```sh\n(.*?)```")
	reTokenCmd  = regexp.MustCompile(`^(\w+)=\$\(go run \. token --email (\S+)\)`)
	reAssign    = regexp.MustCompile(`^(\w+)="([^"]*)"$`)
	reCaptureID = regexp.MustCompile(`^(\w+)=\$\((curl .*?) \| jq -r \.(\w+)\)$`)
	reShownTool = regexp.MustCompile(`"type":"chat\.tool".*?"name":"(\w+)"`)
	reShownTok  = regexp.MustCompile(`"type":"chat\.token".*?"delta":("(?:[^"\\]|\\.)*")`)
	reShownResp = regexp.MustCompile(`"response":("(?:[^"\\]|\\.)*")`)
)

func shellBlocks(readme string) [][]string {
	var out [][]string
	for _, m := range reFence.FindAllStringSubmatch(readme, -1) {
		// A line ending in a backslash goes on on the next, as in a shell.
		body := strings.ReplaceAll(strings.TrimRight(m[1], "\n"), "\\\n", " ")
		out = append(out, strings.Split(body, "\n"))
	}
	return out
}

// chatCmd is one chat example and the README's transcript after it.
type chatCmd struct {
	line  string
	run   func() (tools []string, response string)
	shown []string
}

func (r *readmeRun) block(lines []string) {
	t := r.t
	var pending *chatCmd
	flush := func() {
		if pending != nil {
			r.check(*pending)
			pending = nil
		}
	}
	wscat := false
	for _, line := range lines {
		line = strings.TrimSpace(line)
		if i := strings.Index(line, "in another terminal: "); strings.HasPrefix(line, "#") && i >= 0 {
			line = line[i+len("in another terminal: "):]
		}
		switch {
		case reTokenCmd.MatchString(line):
			flush()
			m := reTokenCmd.FindStringSubmatch(line)
			r.vars[m[1]] = r.token(m[2])
		case reAssign.MatchString(line):
			flush()
			m := reAssign.FindStringSubmatch(line)
			r.vars[m[1]] = r.expand(m[2])
		case reCaptureID.MatchString(line):
			flush()
			m := reCaptureID.FindStringSubmatch(line)
			_, body, _ := r.curl(m[2])
			var v map[string]any
			if err := json.Unmarshal(body, &v); err != nil {
				t.Fatalf("%s: %s", line, body)
			}
			r.vars[m[1]], _ = v[m[3]].(string)
		case strings.HasPrefix(line, "wscat -c"):
			flush()
			wscat = true
		case strings.HasPrefix(line, "curl "):
			flush()
			status, body, sse := r.curl(line)
			if status >= 300 {
				t.Fatalf("%s: got %d %s", line, status, body)
			}
			if strings.Contains(line, "/api/chat") {
				pending = &chatCmd{line: line, run: func() ([]string, string) { return chatOutcome(t, body, sse) }}
			}
		case wscat && strings.HasPrefix(line, "> ") && strings.Contains(line, `"type":"chat"`):
			flush()
			frame := strings.TrimPrefix(line, "> ")
			pending = &chatCmd{line: line, run: func() ([]string, string) {
				ws := r.socket(r.vars["TOKEN"])
				if err := ws.conn.WriteMessage(1, []byte(frame)); err != nil {
					t.Fatal(err)
				}
				return chatOutcome(t, nil, ws.chatUntilEnd())
			}}
		case pending != nil:
			pending.shown = append(pending.shown, line)
		}
	}
	flush()
}

// check runs a chat example and compares it with what the README shows.
func (r *readmeRun) check(c chatCmd) {
	t := r.t
	r.chats++
	tools, response := c.run()
	if strings.HasPrefix(response, "Sorry, I didn't understand") || response == "" {
		t.Fatalf("%s: got %q", c.line, response)
	}
	shown := strings.Join(c.shown, "\n")
	var want []string
	for _, m := range reShownTool.FindAllStringSubmatch(shown, -1) {
		want = append(want, m[1])
	}
	if !subsequence(want, tools) {
		t.Errorf("%s: the README shows the tools %q, the agent called %q", c.line, want, tools)
	}
	if m := reShownTok.FindStringSubmatch(shown); m != nil {
		if tok := unquoteJSON(t, m[1]); !strings.HasPrefix(response, tok) {
			t.Errorf("%s: the README's answer starts %q, got %q", c.line, tok, response)
		}
	}
	if m := reShownResp.FindStringSubmatch(shown); m != nil {
		want := unquoteJSON(t, m[1])
		if i := strings.Index(want, "(id "); i >= 0 { // ids differ from run to run
			want = want[:i]
		}
		if !strings.HasPrefix(response, want) {
			t.Errorf("%s: the README's answer starts %q, got %q", c.line, want, response)
		}
	}
}

// chatOutcome reads the tools called and the stored response of a chat:
// from SSE or socket frames, or a JSON answer.
func chatOutcome(t *testing.T, body []byte, frames []chatFrameT) (tools []string, response string) {
	t.Helper()
	if frames == nil {
		reply := decode[ChatReply](t, body)
		for _, c := range toolCallsOf(t, reply.ChatMessage) {
			tools = append(tools, c.Name)
		}
		return tools, reply.Response
	}
	for _, f := range frames {
		switch f.Type {
		case "chat.tool":
			tools = append(tools, f.Name)
		case "chat.done":
			response = f.stored(t).Response
		case "chat.error":
			t.Fatalf("chat.error: %+v", f)
		}
	}
	return tools, response
}

// token is `evo token --email E`: the user, created if missing, and a token.
func (r *readmeRun) token(email string) string {
	u, err := r.ts.srv.db.EnsureUser(context.Background(), email, "")
	if err != nil {
		r.t.Fatal(err)
	}
	tok, err := r.ts.JWKS.Issuer.Token(u, time.Hour)
	if err != nil {
		r.t.Fatal(err)
	}
	return tok
}

func (r *readmeRun) socket(token string) *wsClient {
	if ws, ok := r.sockets[token]; ok {
		return ws
	}
	ws := live(r.t, r.ts, token)
	r.sockets[token] = ws
	return ws
}

func (r *readmeRun) expand(s string) string {
	out, err := shell.Fields(`"`+s+`"`, func(name string) string { return r.vars[name] })
	if err != nil || len(out) != 1 {
		r.t.Fatalf("expand %q: %v", s, err)
	}
	return out[0]
}

// curl runs a README curl line: -H, -d, -X (-s, -i, -N, -o, -w are the
// terminal's business), against the test server for localhost:8000. SSE
// answers come back as frames.
func (r *readmeRun) curl(line string) (status int, body []byte, sse []chatFrameT) {
	t := r.t
	args, err := shell.Fields(line, func(name string) string { return r.vars[name] })
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	method, url, header := "", "", http.Header{}
	var data *string
	for i := 1; i < len(args); i++ {
		switch a := args[i]; a {
		case "-H", "-d", "-X", "-o", "-w":
			if i+1 == len(args) {
				t.Fatalf("%s: %s needs a value", line, a)
			}
			v := args[i+1]
			i++
			switch a {
			case "-H":
				k, val, _ := strings.Cut(v, ":")
				header.Set(k, strings.TrimSpace(val))
			case "-d":
				data = &v
			case "-X":
				method = v
			}
		case "-s", "-i", "-si", "-N":
		default:
			if !strings.HasPrefix(a, "localhost:8000") {
				t.Fatalf("%s: unexpected argument %q", line, a)
			}
			url = r.ts.URL + strings.TrimPrefix(a, "localhost:8000")
		}
	}
	var reqBody *bytes.Reader
	switch {
	case data != nil:
		reqBody = bytes.NewReader([]byte(*data))
		if method == "" {
			method = http.MethodPost
		}
		header.Set("Content-Type", "application/x-www-form-urlencoded") // what curl -d sends
	default:
		reqBody = bytes.NewReader(nil)
		if method == "" {
			method = http.MethodGet
		}
	}
	req, err := http.NewRequest(method, url, reqBody)
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	req.Header = header
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	defer res.Body.Close()
	if strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		return res.StatusCode, nil, readSSE(t, res.Body)
	}
	var buf bytes.Buffer
	buf.ReadFrom(res.Body)
	return res.StatusCode, buf.Bytes(), nil
}

// builtinTable returns the examples of the README's built-in agent table by
// intent kind (rows whose command is not an intent kind are left out).
func builtinTable(t *testing.T, readme string) map[string][]string {
	t.Helper()
	i := strings.Index(readme, "### The built-in agent")
	if i < 0 {
		t.Fatal("README has no built-in agent section")
	}
	kinds := map[string]bool{agent.IntentAdd: true, agent.IntentList: true, agent.IntentComplete: true, agent.IntentReopen: true,
		agent.IntentRename: true, agent.IntentDelete: true, agent.IntentHelp: true}
	out := map[string][]string{}
	reEx := regexp.MustCompile("`([^`]+)`")
	for _, line := range strings.Split(readme[i:], "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 3 || !kinds[strings.TrimSpace(cells[1])] {
			continue
		}
		for _, m := range reEx.FindAllStringSubmatch(cells[2], -1) {
			if !strings.ContainsFunc(m[1], unicode.IsLetter) { // "the part after `: `"
				continue
			}
			out[strings.TrimSpace(cells[1])] = append(out[strings.TrimSpace(cells[1])], m[1])
		}
	}
	if len(out) != len(kinds) {
		t.Fatalf("built-in agent table: got rows %v", out)
	}
	return out
}

func subsequence(want, got []string) bool {
	for _, g := range got {
		if len(want) > 0 && want[0] == g {
			want = want[1:]
		}
	}
	return len(want) == 0
}

func unquoteJSON(t *testing.T, s string) string {
	t.Helper()
	var out string
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		t.Fatalf("README JSON string %s: %v", s, err)
	}
	return out
}
