package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/tmc/langchaingo/llms"

	"github.com/evotodo/evo/store"
)

// Model is what the runner needs of a chat model: langchaingo's
// GenerateContent, with tools and a streaming func. The OpenAI-compatible
// providers are langchaingo models (NewModel); Builtin is Evo's offline one.
type Model interface {
	GenerateContent(ctx context.Context, messages []llms.MessageContent, options ...llms.CallOption) (*llms.ContentResponse, error)
}

// Sink receives a run's output as it is produced, in order, from the run's
// goroutine. Its methods must not block for long: the model's stream waits.
type Sink interface {
	// Token is a piece of the answer's text, never empty.
	Token(delta string)
	// Tool is a tool call the model asked for, after it ran.
	Tool(call ToolCall)
}

// ToolCall is one tool call of a run, as it is shown to clients and
// stored with the exchange: Result on success, Error otherwise.
type ToolCall struct {
	Name string `json:"name"`
	// Arguments are the model's arguments: a JSON object, or a JSON
	// string holding what the model sent if that was not valid JSON.
	Arguments json.RawMessage `json:"arguments"`
	Result    any             `json:"result,omitempty"`
	Error     string          `json:"error,omitempty"`
}

// Exchange is an earlier message of the user and the answer it got, given
// to the model as context.
type Exchange struct {
	Message  string
	Response string
}

// Request is one message to answer.
type Request struct {
	// UserID is the authenticated user: every tool runs for this user,
	// whatever the model puts in the arguments.
	UserID  string
	Message string
	// History holds earlier exchanges, oldest first.
	History []Exchange
}

// Reply is what a run produced: the text streamed to the user and the tool
// calls made, complete or, when Run failed, as far as it got.
type Reply struct {
	Text      string
	ToolCalls []ToolCall
	// Steps counts the model calls made.
	Steps int
	// Capped is set when the run stopped at the step limit.
	Capped bool
}

// ModelError is a failure of the model provider: an error status, a broken
// or unfinished stream, or no answer within the timeout.
type ModelError struct {
	// Timeout is the per-call limit the model exceeded; 0 for other errors.
	Timeout time.Duration
	Err     error
}

// Error is the failure for the log: the provider's error text, redacted
// (Redact; NewModel's models also remove their API key).
func (e *ModelError) Error() string {
	if e.Timeout > 0 {
		return fmt.Sprintf("the model did not answer within %s", e.Timeout)
	}
	return "the model provider failed: " + Redact(e.Err.Error(), "")
}

// Public is what clients are told: a fixed sentence, with the HTTP status
// the provider answered if there was one, never the provider's text (it
// may echo the API key).
func (e *ModelError) Public() string {
	var pe *ProviderError
	switch {
	case e.Timeout > 0:
		return e.Error()
	case errors.As(e.Err, &pe) && pe.Status != 0:
		return fmt.Sprintf("the model provider failed (it answered HTTP %d); try again later", pe.Status)
	}
	return "the model provider failed; try again later"
}

func (e *ModelError) Unwrap() error { return e.Err }

// errUnfinished is a stream that ended without a finish reason: the
// provider broke off (or sent an error event langchaingo skips).
var errUnfinished = errors.New("the response stream ended before the model finished")

// Config tunes a Runner. Zero values mean the defaults.
type Config struct {
	// MaxSteps caps the model calls per message; a model still asking for
	// tools at the last one is stopped with a message. Default 5.
	MaxSteps int
	// MaxToolCalls caps the tool calls run per model call: the calls a
	// model asks for beyond it do not run, and each gets a rate_limited
	// error result (so the model learns to ask for fewer). Default 10.
	MaxToolCalls int
	// Timeout bounds each model call, the whole stream included. Default 60s.
	Timeout time.Duration
	// ToolTimeout bounds each tool call. Default 30s.
	ToolTimeout time.Duration
	// SystemPrompt replaces the default SystemPrompt.
	SystemPrompt string
	// Metrics receives the runner's counts (model calls, tokens, tool calls).
	// Default: none.
	Metrics Metrics
}

func (c Config) withDefaults() Config {
	if c.MaxSteps <= 0 {
		c.MaxSteps = 5
	}
	if c.MaxToolCalls <= 0 {
		c.MaxToolCalls = 10
	}
	if c.Timeout <= 0 {
		c.Timeout = 60 * time.Second
	}
	if c.ToolTimeout <= 0 {
		c.ToolTimeout = 30 * time.Second
	}
	if c.SystemPrompt == "" {
		c.SystemPrompt = SystemPrompt
	}
	if c.Metrics == nil {
		c.Metrics = nopMetrics{}
	}
	return c
}

// SystemPrompt makes the model a focused todo assistant.
const SystemPrompt = `You are Evo, the assistant of a todo app. You help the user manage their own todo list and nothing else.

You act only through the tools: add_task, list_tasks, complete_task (completed=false reopens a task), update_task and delete_task.
- To change or delete a task you need its id: call list_tasks first and match the user's words to a task's title. Never invent ids.
- If several tasks could match, or the request is unclear, ask which one the user means instead of guessing. Ask before deleting more than one task.
- After a change, confirm in one short sentence what you did, naming the task. If a tool returns an error, fix the arguments and retry, or tell the user plainly what went wrong.
- When listing, show titles (not ids), pending tasks first.
- For anything unrelated to the user's todos, say briefly that you only manage their todo list.
Answer in the user's language, briefly, in plain text.`

// Runner answers chat messages with a model and the todo tools. It is safe
// for concurrent use.
type Runner struct {
	model Model
	tools map[string]Tool
	llm   []llms.Tool
	cfg   Config
	log   *slog.Logger
}

// NewRunner returns a runner that answers with model, offering it tools
// (Tools, usually). log may be nil.
func NewRunner(model Model, tools []Tool, cfg Config, log *slog.Logger) *Runner {
	r := &Runner{model: model, tools: make(map[string]Tool, len(tools)), cfg: cfg.withDefaults(), log: log}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	for _, t := range tools {
		r.tools[t.Name] = t
		r.llm = append(r.llm, llms.Tool{Type: "function", Function: &llms.FunctionDefinition{
			Name: t.Name, Description: t.Description, Parameters: t.Schema,
		}})
	}
	return r
}

// Run answers req: it calls the model with the tools, streams the text to
// sink as it comes, runs the tool calls the model asks for (as req.UserID,
// at most MaxToolCalls per model call) and feeds their results, or their
// errors, back, until the model answers without tools or MaxSteps calls
// were made.
//
// The Reply holds what was produced even when Run fails. Errors: ctx's
// error when ctx ends (cancelled, the model request is aborted), or a
// *ModelError.
func (r *Runner) Run(ctx context.Context, req Request, sink Sink) (Reply, error) {
	msgs := make([]llms.MessageContent, 0, 2+2*len(req.History))
	msgs = append(msgs, llms.TextParts(llms.ChatMessageTypeSystem, r.cfg.SystemPrompt))
	for _, ex := range req.History {
		msgs = append(msgs, llms.TextParts(llms.ChatMessageTypeHuman, ex.Message))
		if ex.Response != "" {
			msgs = append(msgs, llms.TextParts(llms.ChatMessageTypeAI, ex.Response))
		}
	}
	msgs = append(msgs, llms.TextParts(llms.ChatMessageTypeHuman, req.Message))

	var reply Reply
	out := &textOut{sink: sink, reply: &reply, metrics: r.cfg.Metrics}
	for {
		reply.Steps++
		choice, err := r.generate(ctx, msgs, out)
		if err != nil {
			return reply, err
		}
		calls := toolCalls(choice.ToolCalls)
		if len(calls) == 0 {
			return reply, nil
		}
		if reply.Steps >= r.cfg.MaxSteps {
			reply.Capped = true
			out.say(fmt.Sprintf("I stopped here: this needed more than %d steps, the most I may take for one message. "+
				"The changes listed above were made; please check your list and try a simpler request.", r.cfg.MaxSteps))
			return reply, nil
		}
		ai := llms.MessageContent{Role: llms.ChatMessageTypeAI}
		if choice.Content != "" {
			ai.Parts = append(ai.Parts, llms.TextPart(choice.Content))
		}
		for _, c := range calls {
			ai.Parts = append(ai.Parts, c)
		}
		msgs = append(msgs, ai)
		for i, c := range calls {
			if err := ctx.Err(); err != nil {
				return reply, err
			}
			var call ToolCall
			var content string
			if i < r.cfg.MaxToolCalls {
				call, content = r.runTool(ctx, req.UserID, c)
			} else {
				call, content = r.refuseTool(c, len(calls))
			}
			reply.ToolCalls = append(reply.ToolCalls, call)
			sink.Tool(call)
			msgs = append(msgs, llms.MessageContent{Role: llms.ChatMessageTypeTool, Parts: []llms.ContentPart{
				llms.ToolCallResponse{ToolCallID: c.ID, Name: c.FunctionCall.Name, Content: content},
			}})
		}
	}
}

// generate makes one model call, streaming its text to out.
func (r *Runner) generate(ctx context.Context, msgs []llms.MessageContent, out *textOut) (_ *llms.ContentChoice, err error) {
	callCtx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	out.startStep()
	start := time.Now()
	defer func() { r.cfg.Metrics.ModelCall(time.Since(start), err) }()
	resp, err := r.model.GenerateContent(callCtx, msgs,
		llms.WithTools(r.llm),
		llms.WithStreamingFunc(func(_ context.Context, chunk []byte) error {
			// langchaingo passes tool-call deltas (as JSON) and empty chunks
			// to the streaming func too (tmc/langchaingo#1031).
			if len(chunk) > 0 && !isToolCallChunk(chunk) {
				out.token(string(chunk))
			}
			return nil
		}))
	// A stream cut short by a context ends without error in langchaingo,
	// and its HTTP errors hide the context's: ask the contexts first.
	switch {
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case callCtx.Err() != nil:
		return nil, &ModelError{Timeout: r.cfg.Timeout, Err: callCtx.Err()}
	case err != nil:
		return nil, &ModelError{Err: err}
	case resp == nil || len(resp.Choices) == 0 || resp.Choices[0] == nil:
		return nil, &ModelError{Err: errors.New("empty response")}
	}
	choice := resp.Choices[0]
	if choice.StopReason == "" {
		return nil, &ModelError{Err: errUnfinished}
	}
	if !out.streamed && choice.Content != "" {
		out.token(choice.Content) // a provider that did not stream
	}
	return choice, nil
}

// runTool runs one tool call for user and returns it as recorded and the
// content fed back to the model: {"summary":...,"data":...} or
// {"error":"code: message"}.
func (r *Runner) runTool(ctx context.Context, user string, c llms.ToolCall) (ToolCall, string) {
	name, args := c.FunctionCall.Name, strings.TrimSpace(c.FunctionCall.Arguments)
	call := ToolCall{Name: name, Arguments: argumentsJSON(args)}
	fail := func(err error) (ToolCall, string) {
		call.Error = toolError(err)
		content, _ := json.Marshal(map[string]string{"error": call.Error})
		return call, string(content)
	}
	tool, ok := r.tools[name]
	if !ok {
		err := store.Errorf(store.CodeInvalid, "there is no tool %q; the tools are %s", name, r.toolNames())
		r.cfg.Metrics.ToolCall("unknown", 0, err)
		return fail(err)
	}
	tctx, cancel := context.WithTimeout(ctx, r.cfg.ToolTimeout)
	defer cancel()
	start := time.Now()
	res, err := tool.Run(tctx, user, json.RawMessage(args))
	r.cfg.Metrics.ToolCall(name, time.Since(start), err)
	if err != nil {
		if code := store.ErrorCode(err); code == store.CodeInternal || code == store.CodeUnavailable {
			r.log.Warn("chat tool failed", slog.String("tool", name), slog.String("user_id", user), slog.Any("error", err))
		}
		return fail(err)
	}
	call.Result = res.Data
	content, err := json.Marshal(struct {
		Summary string `json:"summary"`
		Data    any    `json:"data"`
	}{res.Text, res.Data})
	if err != nil {
		return fail(fmt.Errorf("encode %s result: %w", name, err))
	}
	return call, string(content)
}

// refuseTool answers a tool call beyond MaxToolCalls of one step of n
// calls without running it.
func (r *Runner) refuseTool(c llms.ToolCall, n int) (ToolCall, string) {
	err := store.Errorf(store.CodeRateLimited, "at most %d tool calls run per step and you asked for %d: this one did not run; "+
		"ask for it again in your next step if it is still needed", r.cfg.MaxToolCalls, n)
	label := c.FunctionCall.Name
	if _, ok := r.tools[label]; !ok {
		label = "unknown"
	}
	r.cfg.Metrics.ToolCall(label, 0, err)
	call := ToolCall{Name: c.FunctionCall.Name, Arguments: argumentsJSON(strings.TrimSpace(c.FunctionCall.Arguments)), Error: toolError(err)}
	content, _ := json.Marshal(map[string]string{"error": call.Error})
	return call, string(content)
}

func (r *Runner) toolNames() string {
	names := make([]string, 0, len(r.llm))
	for _, t := range r.llm {
		names = append(names, t.Function.Name)
	}
	return strings.Join(names, ", ")
}

// toolError is the error text the model and the client see: the store
// code and its client-safe message ("invalid: title must not be empty").
func toolError(err error) string {
	msg := store.ErrorMessage(err)
	if f := store.ErrorField(err); f != "" && !strings.Contains(msg, f) {
		msg += " (field " + f + ")"
	}
	return store.ErrorCode(err) + ": " + msg
}

// argumentsJSON returns the model's arguments as JSON: as sent if valid,
// {} if empty, else the text as a JSON string.
func argumentsJSON(args string) json.RawMessage {
	switch {
	case args == "":
		return json.RawMessage("{}")
	case json.Valid([]byte(args)):
		return json.RawMessage(args)
	}
	s, _ := json.Marshal(args)
	return s
}

// toolCalls returns the usable tool calls: langchaingo may leave an entry
// without a name (an empty delta), and some servers send no ids.
func toolCalls(in []llms.ToolCall) []llms.ToolCall {
	var out []llms.ToolCall
	for _, c := range in {
		if c.FunctionCall == nil || (c.FunctionCall.Name == "" && c.FunctionCall.Arguments == "") {
			continue
		}
		if c.ID == "" {
			c.ID = fmt.Sprintf("call_%d", len(out)+1)
		}
		if c.Type == "" {
			c.Type = "function"
		}
		out = append(out, c)
	}
	return out
}

// isToolCallChunk reports whether a streamed chunk is langchaingo's JSON
// of a tool-call delta ([{"id":...,"type":...,"function":{...}}]) or of a
// legacy function call ({"name":...,"arguments":...}) rather than text.
func isToolCallChunk(chunk []byte) bool {
	chunk = bytes.TrimSpace(chunk)
	if len(chunk) < 2 {
		return false
	}
	switch chunk[0] {
	case '[':
		var calls []map[string]json.RawMessage
		if json.Unmarshal(chunk, &calls) != nil || len(calls) == 0 {
			return false
		}
		for _, c := range calls {
			if _, ok := c["function"]; !ok {
				return false
			}
			for k := range c {
				if k != "id" && k != "type" && k != "function" && k != "index" {
					return false
				}
			}
		}
		return true
	case '{':
		var fc map[string]json.RawMessage
		if json.Unmarshal(chunk, &fc) != nil || len(fc) != 2 {
			return false
		}
		_, name := fc["name"]
		_, args := fc["arguments"]
		return name && args
	}
	return false
}

// textOut forwards the answer's text to the sink and keeps it in the reply.
type textOut struct {
	sink     Sink
	reply    *Reply
	metrics  Metrics
	streamed bool // text came in the current step
}

func (o *textOut) startStep() { o.streamed = false }

func (o *textOut) token(s string) {
	if s == "" {
		return
	}
	// Text of a later step starts a new paragraph.
	if !o.streamed && o.reply.Text != "" && !endsInSpace(o.reply.Text) && !startsWithSpace(s) {
		s = "\n\n" + s
	}
	o.streamed = true
	o.reply.Text += s
	o.sink.Token(s)
	o.metrics.Token()
}

// say streams a message of the runner's own, word by word.
func (o *textOut) say(msg string) {
	o.startStep()
	for _, w := range words(msg) {
		o.token(w)
	}
}

func endsInSpace(s string) bool     { return strings.HasSuffix(s, " ") || strings.HasSuffix(s, "\n") }
func startsWithSpace(s string) bool { return strings.HasPrefix(s, " ") || strings.HasPrefix(s, "\n") }

// words splits s after each run of spaces and newlines, so that the pieces
// joined give s back.
func words(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if (s[i] == ' ' || s[i] == '\n') && (i+1 == len(s) || (s[i+1] != ' ' && s[i+1] != '\n')) {
			out = append(out, s[start:i+1])
			start = i + 1
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}
