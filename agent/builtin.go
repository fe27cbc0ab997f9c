package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/tmc/langchaingo/llms"
)

// Builtin is the offline agent: a Model that understands plain todo
// commands (see ParseIntent), so the embedded default chats with no
// network and no key. It runs in the Runner's tool loop like any model: it
// asks for the same tools, reads their results from the conversation, and
// streams its reply word by word. It never sees the user's id: the runner
// runs the tools for the authenticated user.
//
// A title fragment ("done with milk") is resolved with list_tasks: one
// match is acted on; several make it ask which one, listing them numbered
// with a short id; none make it say so. The next message may then pick one
// ("1", "the first one", "delete the second one", or the id, "4333a1b2"):
// the numbered list is read back from the previous answer in the
// conversation (the chat history), so nothing is kept between messages.
type Builtin struct{}

var _ Model = Builtin{}

// Intent kinds.
const (
	IntentUnknown  = "unknown"
	IntentHelp     = "help"
	IntentAdd      = "add"
	IntentList     = "list"
	IntentComplete = "complete"
	IntentReopen   = "reopen"
	IntentRename   = "rename"
	IntentDelete   = "delete"
)

// List statuses, as list_tasks takes them.
const (
	statusAll       = "all"
	statusPending   = "pending"
	statusCompleted = "completed"
)

// Intent is what the builtin agent understood of a message.
type Intent struct {
	Kind string
	// Title is the new task's title (add) or the new title (rename).
	Title string
	// Description is the text after a colon in "add buy milk: 2 litres".
	Description *string
	// Target is the words naming an existing task (complete, reopen,
	// rename, delete).
	Target string
	// Status is which tasks to list: all, pending or completed.
	Status string
	// TaskID is the start of the id of the task picked from a numbered
	// list (set by the conversation, not by ParseIntent).
	TaskID string
}

// The phrasings, tried in order on the normalized message. Each pattern
// is anchored; capture group 1 is the target (or the add's remainder) and
// group 2 the new title of a rename.
var (
	reRename     = regexp.MustCompile(`(?i)^(?:rename|retitle|change|update|edit)\s+(.+?)\s+(?:to|into|as)\s*:?\s+(.+)$`)
	reRenameBare = regexp.MustCompile(`(?i)^(?:rename|retitle)\s*:?\s+(.+)$`)
	reReopen     = []*regexp.Regexp{
		regexp.MustCompile(`(?i)^mark\s+(.+?)\s+(?:as\s+)?(?:not\s+done|undone|not\s+completed?|incomplete|uncompleted|pending|open|unfinished|not\s+finished|to\s*-?\s*do)$`),
		regexp.MustCompile(`(?i)^(?:reopen|re-open|uncomplete|un-complete|undo|uncheck|untick|unmark|restore)\s*:?\s+(.+)$`),
		regexp.MustCompile(`(?i)^(.+?)\s+is\s+(?:not\s+done|not\s+finished|not\s+completed?|pending again|open again)$`),
	}
	reComplete = []*regexp.Regexp{
		regexp.MustCompile(`(?i)^mark\s+(.+?)\s+(?:as\s+)?(?:done|complete|completed|finished)$`),
		regexp.MustCompile(`(?i)^(?:i\s*'?\s*m\s+|i\s+am\s+)?(?:done|finished)\s+with\s+(.+)$`),
		regexp.MustCompile(`(?i)^(?:i\s+)?(?:have\s+|'ve\s+)?(?:complete|completed|finish|finished|done|did)\s*:?\s+(.+)$`),
		regexp.MustCompile(`(?i)^(?:check|tick|cross)(?:\s+off)?\s*:?\s+(.+?)(?:\s+off)?$`),
		regexp.MustCompile(`(?i)^(.+?)\s+is\s+(?:done|complete|completed|finished)$`),
	}
	reDelete = regexp.MustCompile(`(?i)^(?:delete|remove|drop|erase|forget|cancel|trash|discard|get\s+rid\s+of)\s*:?\s+(.+)$`)
	reAdd    = regexp.MustCompile(`(?i)^(?:add|create|new|remind\s+me\s+to|remember\s+to|don'?t\s+forget\s+to|i\s+need\s+to|i\s+have\s+to|i\s+must|todo|to-do)\b\s*:?\s*(.*)$`)
	// reAddNoun drops "a task", "a new todo to", "to my list:" and the like
	// from the start of an add's remainder.
	reAddNoun    = regexp.MustCompile(`(?i)^(?:(?:an?\s+)?(?:new\s+)?(?:task|todo|to-do|item|reminder|entry)s?\b\s*(?:(?:to|for|called|named|titled)\b)?\s*:?\s*|(?:to|on)\s+(?:my|the)\s+(?:todo\s+|to-do\s+)?(?:list|tasks|todos)\s*:?\s*)`)
	reListSuffix = regexp.MustCompile(`(?i)\s+(?:to|on|onto|from|off|in)\s+(?:my|the)\s+(?:todo\s+|to-do\s+)?(?:list|tasks|todos|todo list)$`)
	reList       = regexp.MustCompile(`(?i)^(?:list|ls|show|display|view|see|get|give\s+me|tell\s+me|what|what's|whats|which|how\s+many|do\s+i\s+have|anything)\b`)
	reListWords  = regexp.MustCompile(`(?i)\b(?:list|tasks?|todos?|to-dos?|agenda)\b`)
	rePending    = regexp.MustCompile(`(?i)\b(?:pending|open|left|remaining|unfinished|incomplete|outstanding|not\s+done|undone|still\s+(?:have\s+)?to\s+do)\b`)
	reCompleted  = regexp.MustCompile(`(?i)\b(?:completed?|done|finished|checked\s+off|did\s+i\s+(?:do|finish))\b`)
	reToDo       = regexp.MustCompile(`(?i)\bto\s+do\b`)
	reStatusList = regexp.MustCompile(`(?i)^(?:(?:all|my|pending|open|remaining|unfinished|completed?|done|finished)\s+)?(?:tasks|todos|to-dos|items|list|pending|open|completed|done|finished|ones)$`)
	reHelp       = regexp.MustCompile(`(?i)^(?:help|\?|hi|hello|hey|hallo|yo|commands|what\s+can\s+you\s+do|how\s+does\s+this\s+work|who\s+are\s+you)\b`)
	rePolite     = regexp.MustCompile(`(?i)^(?:please|pls|plz|kindly|ok(?:ay)?|hey|hi|evo|can\s+you|could\s+you|would\s+you|will\s+you|i\s*'?\s*d\s+like\s+(?:you\s+)?to|i\s+want\s+(?:you\s+)?to|let'?s|go\s+ahead\s+and|just)\b[\s,:]*`)
	rePoliteEnd  = regexp.MustCompile(`(?i)[\s,]+(?:please|pls|plz|thanks|thank\s+you|thx)$`)
	reSpaces     = regexp.MustCompile(`\s+`)
)

// ParseIntent reads a plain todo command. It never panics; what it does not
// understand is IntentUnknown. Phrasings, with "milk" naming a task:
//
//	add buy milk · add buy milk: 2 litres · add a task to buy milk · remind me to buy milk
//	list · what's on my list · show pending · what's left · show completed · what have I done
//	done with milk · complete milk · mark milk as done · check off milk · milk is done
//	reopen milk · undo milk · mark milk as not done
//	rename milk to oat milk · change milk to oat milk
//	delete milk · remove milk from my list · get rid of milk
//	help · what can you do
func ParseIntent(text string) Intent {
	s := normalize(text)
	if s == "" {
		return Intent{Kind: IntentHelp}
	}
	if m := reRename.FindStringSubmatch(s); m != nil {
		return Intent{Kind: IntentRename, Target: cleanTarget(m[1]), Title: cleanTitle(m[2])}
	}
	if m := reRenameBare.FindStringSubmatch(s); m != nil {
		return Intent{Kind: IntentRename, Target: cleanTarget(m[1])}
	}
	for _, re := range reReopen {
		if m := re.FindStringSubmatch(s); m != nil {
			return Intent{Kind: IntentReopen, Target: cleanTarget(m[1])}
		}
	}
	if m := reDelete.FindStringSubmatch(s); m != nil {
		return Intent{Kind: IntentDelete, Target: cleanTarget(m[1])}
	}
	if m := reAdd.FindStringSubmatch(s); m != nil {
		return parseAdd(m[1])
	}
	if in, ok := parseList(s); ok {
		return in
	}
	for _, re := range reComplete {
		if m := re.FindStringSubmatch(s); m != nil {
			return Intent{Kind: IntentComplete, Target: cleanTarget(m[1])}
		}
	}
	if reHelp.MatchString(s) {
		return Intent{Kind: IntentHelp}
	}
	return Intent{Kind: IntentUnknown}
}

// normalize collapses white space and drops politeness and end punctuation.
func normalize(text string) string {
	s := strings.TrimSpace(reSpaces.ReplaceAllString(strings.ToValidUTF8(text, ""), " "))
	for range 4 { // "ok please could you ..."
		t := strings.TrimSpace(rePolite.ReplaceAllString(s, ""))
		t = strings.TrimSpace(rePoliteEnd.ReplaceAllString(t, ""))
		t = strings.TrimRight(t, ".!?;, ")
		if t == s {
			break
		}
		s = t
	}
	return s
}

func parseAdd(rest string) Intent {
	rest = strings.TrimSpace(reAddNoun.ReplaceAllString(strings.TrimSpace(rest), ""))
	rest = reListSuffix.ReplaceAllString(rest, "")
	in := Intent{Kind: IntentAdd}
	title, desc, ok := strings.Cut(rest, ": ")
	if ok && strings.TrimSpace(title) != "" && strings.TrimSpace(desc) != "" {
		d := strings.TrimSpace(desc)
		in.Description = &d
		rest = title
	}
	in.Title = cleanTitle(reListSuffix.ReplaceAllString(strings.TrimSpace(rest), ""))
	return in
}

// parseList recognises a question about the list and which tasks it means.
func parseList(s string) (Intent, bool) {
	lower := strings.ToLower(s)
	switch {
	case reStatusList.MatchString(s), strings.HasPrefix(lower, "list"), strings.HasPrefix(lower, "show"):
	case reList.MatchString(s) && (reListWords.MatchString(s) || rePending.MatchString(s) || reCompleted.MatchString(s) || reToDo.MatchString(s)):
	default:
		return Intent{}, false
	}
	in := Intent{Kind: IntentList, Status: statusAll}
	switch {
	case rePending.MatchString(s):
		in.Status = statusPending
	case reCompleted.MatchString(s):
		in.Status = statusCompleted
	}
	return in, true
}

// cleanTarget drops articles, "task" and list phrases around a task's
// name: "the milk task from my list" is "milk".
func cleanTarget(s string) string {
	s = reListSuffix.ReplaceAllString(strings.TrimSpace(s), "")
	for {
		lower := strings.ToLower(s)
		t := s
		for _, p := range []string{"the ", "my ", "task ", "todo ", "item "} {
			if strings.HasPrefix(lower, p) && len(s) > len(p) {
				t = s[len(p):]
				break
			}
		}
		for _, p := range []string{" task", " todo", " item"} {
			if strings.HasSuffix(strings.ToLower(t), p) && len(t) > len(p) {
				t = t[:len(t)-len(p)]
				break
			}
		}
		t = strings.TrimSpace(t)
		if t == s {
			break
		}
		s = t
	}
	return unquote(s)
}

// cleanTitle trims a new title and the quotes around it.
func cleanTitle(s string) string { return unquote(strings.TrimSpace(s)) }

func unquote(s string) string {
	s = strings.TrimSpace(s)
	for _, q := range [][2]string{{`"`, `"`}, {"'", "'"}, {"“", "”"}, {"‘", "’"}, {"«", "»"}, {"`", "`"}} {
		if len(s) >= len(q[0])+len(q[1]) && strings.HasPrefix(s, q[0]) && strings.HasSuffix(s, q[1]) {
			return strings.TrimSpace(s[len(q[0]) : len(s)-len(q[1])])
		}
	}
	return s
}

// GenerateContent answers the conversation's last user message: it parses
// the command, and from the tool results that follow that message in
// messages decides the next step: a tool call, or the reply, streamed word
// by word through the streaming func.
func (Builtin) GenerateContent(ctx context.Context, messages []llms.MessageContent, options ...llms.CallOption) (*llms.ContentResponse, error) {
	var opts llms.CallOptions
	for _, o := range options {
		o(&opts)
	}
	human, results, earlier := lastTurn(messages)
	text, call := builtinStep(withChoice(ParseIntent(human), human, earlier), results)
	if call != nil {
		call.ID = fmt.Sprintf("builtin_%d", len(results)+1)
		return &llms.ContentResponse{Choices: []*llms.ContentChoice{{
			StopReason: "tool_calls", ToolCalls: []llms.ToolCall{*call}, FuncCall: call.FunctionCall,
		}}}, nil
	}
	if opts.StreamingFunc != nil {
		for _, w := range words(text) {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			// A word that reads like langchaingo's tool-call JSON (a task titled
			// {"name":..,"arguments":..}) would be taken for one by the runner and
			// dropped: send its first byte apart.
			if isToolCallChunk([]byte(w)) {
				i := len(w) - len(strings.TrimLeftFunc(w, unicode.IsSpace)) + 1
				if err := opts.StreamingFunc(ctx, []byte(w[:i])); err != nil {
					return nil, err
				}
				w = w[i:]
			}
			if err := opts.StreamingFunc(ctx, []byte(w)); err != nil {
				return nil, err
			}
		}
	}
	return &llms.ContentResponse{Choices: []*llms.ContentChoice{{Content: text, StopReason: "stop"}}}, nil
}

// Call implements the rest of llms.Model.
func (b Builtin) Call(ctx context.Context, prompt string, options ...llms.CallOption) (string, error) {
	return llms.GenerateFromSinglePrompt(ctx, b, prompt, options...)
}

// toolResult is a tool's answer as the runner feeds it back.
type toolResult struct {
	Name    string
	Summary string          `json:"summary"`
	Data    json.RawMessage `json:"data"`
	Error   string          `json:"error"`
}

// exchange is an earlier user message and the answer's text.
type exchange struct{ human, ai string }

// lastTurn returns the text of the last user message, the tool results
// after it, in order, and the exchanges before it, oldest first.
func lastTurn(messages []llms.MessageContent) (string, []toolResult, []exchange) {
	var turns []exchange
	var results []toolResult
	for _, m := range messages {
		switch m.Role {
		case llms.ChatMessageTypeHuman, llms.ChatMessageTypeGeneric:
			turns = append(turns, exchange{human: textOf(m)})
			results = nil
		case llms.ChatMessageTypeAI:
			if len(turns) > 0 {
				turns[len(turns)-1].ai += textOf(m)
			}
		case llms.ChatMessageTypeTool:
			for _, p := range m.Parts {
				if r, ok := p.(llms.ToolCallResponse); ok {
					var tr toolResult
					if err := json.Unmarshal([]byte(r.Content), &tr); err != nil {
						tr.Error = r.Content
					}
					tr.Name = r.Name
					results = append(results, tr)
				}
			}
		}
	}
	if len(turns) == 0 {
		return "", results, nil
	}
	return turns[len(turns)-1].human, results, turns[:len(turns)-1]
}

func textOf(m llms.MessageContent) string {
	var s string
	for _, p := range m.Parts {
		if t, ok := p.(llms.TextContent); ok {
			s += t.Text
		}
	}
	return s
}

// builtinStep returns the reply or the next tool call for an intent, given
// the results of the calls made so far for it.
func builtinStep(in Intent, results []toolResult) (string, *llms.ToolCall) {
	switch in.Kind {
	case IntentAdd:
		switch {
		case in.Title == "":
			return "What should I add? For example: “add buy milk”, or “add buy milk: 2 litres” with a note.", nil
		case len(results) == 0:
			args := map[string]any{"title": in.Title}
			if in.Description != nil {
				args["description"] = *in.Description
			}
			return "", toolCall("add_task", args)
		}
		r := results[0]
		if r.Error != "" {
			return "I couldn't add that: " + errorText(r.Error), nil
		}
		var c Change
		_ = json.Unmarshal(r.Data, &c)
		if c.Task.Description != nil && *c.Task.Description != "" {
			return fmt.Sprintf("Added %s to your list, with the note %s.", quoteTitle(c.Title), quoteTitle(*c.Task.Description)), nil
		}
		return fmt.Sprintf("Added %s to your list.", quoteTitle(c.Title)), nil

	case IntentList:
		if len(results) == 0 {
			return "", toolCall("list_tasks", map[string]any{"status": in.Status, "limit": DefaultListLimit})
		}
		if results[0].Error != "" {
			return "I couldn't read your list: " + errorText(results[0].Error), nil
		}
		var list TaskList
		_ = json.Unmarshal(results[0].Data, &list)
		return listReply(in.Status, list), nil

	case IntentComplete, IntentReopen, IntentRename, IntentDelete:
		return targetStep(in, results)

	case IntentHelp:
		return helpText, nil

	case intentBadChoice:
		list := in.Title
		if i := strings.Index(list, "\n"); i >= 0 {
			list = list[i+1:]
		}
		return fmt.Sprintf("There is no choice %s. The tasks were:\n%s", in.Target, list), nil
	}
	return "Sorry, I didn't understand that. " + helpText, nil
}

// targetStep resolves the task an intent names (list_tasks), then acts on it.
func targetStep(in Intent, results []toolResult) (string, *llms.ToolCall) {
	verb := map[string]string{IntentComplete: "complete", IntentReopen: "reopen", IntentRename: "rename", IntentDelete: "delete"}[in.Kind]
	status := statusAll
	switch in.Kind {
	case IntentComplete:
		status = statusPending
	case IntentReopen:
		status = statusCompleted
	}
	switch {
	case in.Target == "":
		return fmt.Sprintf("Which task should I %s? Name it, for example: %s.", verb, example(in.Kind, "buy milk")), nil
	case in.Kind == IntentRename && in.Title == "":
		return fmt.Sprintf("What should I rename %s to? For example: “rename %s to oat milk”.", quoteTitle(in.Target), in.Target), nil
	case len(results) == 0:
		return "", toolCall("list_tasks", map[string]any{"status": status, "limit": maxListLimit})
	}
	if results[0].Error != "" {
		return "I couldn't look up your tasks: " + errorText(results[0].Error), nil
	}
	if len(results) == 1 {
		var list TaskList
		_ = json.Unmarshal(results[0].Data, &list)
		matches := matchTasks(list.Tasks, in.Target)
		if in.TaskID != "" {
			matches = matchID(list.Tasks, in.TaskID)
		}
		switch len(matches) {
		case 0:
			kind := "task"
			if status != statusAll {
				kind = status + " task"
			}
			if in.TaskID != "" {
				return fmt.Sprintf("You have no %s with the id %s any more.", kind, in.TaskID), nil
			}
			return fmt.Sprintf("You have no %s matching %s.", kind, quoteTitle(in.Target)), nil
		case 1:
		default:
			return choicesReply(in, matches, list.Tasks), nil
		}
		id := matches[0].ID
		switch in.Kind {
		case IntentComplete:
			return "", toolCall("complete_task", map[string]any{"task_id": id, "completed": true})
		case IntentReopen:
			return "", toolCall("complete_task", map[string]any{"task_id": id, "completed": false})
		case IntentRename:
			return "", toolCall("update_task", map[string]any{"task_id": id, "title": in.Title})
		default:
			return "", toolCall("delete_task", map[string]any{"task_id": id})
		}
	}
	r := results[len(results)-1]
	if r.Error != "" {
		return fmt.Sprintf("I couldn't %s that task: %s", verb, errorText(r.Error)), nil
	}
	var c Change
	_ = json.Unmarshal(r.Data, &c)
	switch in.Kind {
	case IntentComplete:
		return fmt.Sprintf("Marked %s as done.", quoteTitle(c.Title)), nil
	case IntentReopen:
		return fmt.Sprintf("Reopened %s: it is pending again.", quoteTitle(c.Title)), nil
	case IntentRename:
		var list TaskList
		_ = json.Unmarshal(results[0].Data, &list)
		old := in.Target
		for _, t := range list.Tasks {
			if t.ID == c.TaskID {
				old = t.Title
			}
		}
		return fmt.Sprintf("Renamed %s to %s.", quoteTitle(old), quoteTitle(c.Title)), nil
	}
	return fmt.Sprintf("Deleted %s.", quoteTitle(c.Title)), nil
}

const helpText = "I'm Evo's built-in assistant and understand simple commands:\n" +
	"- add buy milk (or: add buy milk: 2 litres, with a note)\n" +
	"- what's on my list / show pending / show completed\n" +
	"- done with milk / mark milk as done\n" +
	"- reopen milk\n" +
	"- rename milk to oat milk\n" +
	"- delete milk\n" +
	"A few words of a title are enough to name a task. If several match, I list them: answer with a number (“1”) or an id."

func example(kind, title string) string {
	switch kind {
	case IntentComplete:
		return "“done with " + title + "”"
	case IntentReopen:
		return "“reopen " + title + "”"
	case IntentRename:
		return "“rename " + title + " to ...”"
	}
	return "“delete " + title + "”"
}

func listReply(status string, list TaskList) string {
	if len(list.Tasks) == 0 {
		switch status {
		case statusPending:
			return "You have no pending tasks."
		case statusCompleted:
			return "You have no completed tasks."
		}
		return "Your list is empty. Add something with “add buy milk”."
	}
	var b strings.Builder
	kind := "task"
	switch status {
	case statusPending:
		kind = "pending task"
	case statusCompleted:
		kind = "completed task"
	}
	if list.Total != 1 {
		kind += "s"
	}
	fmt.Fprintf(&b, "You have %d %s:\n", list.Total, kind)
	for i, t := range list.Tasks {
		b.WriteString("- " + t.Title)
		if t.Completed && status == statusAll {
			b.WriteString(" (done)")
		}
		if i < len(list.Tasks)-1 {
			b.WriteString("\n")
		}
	}
	if more := list.Total - len(list.Tasks); more > 0 {
		fmt.Fprintf(&b, "\n... and %d more.", more)
	}
	return b.String()
}

// matchTasks returns the tasks whose title the target names: those equal to
// it if any, else those containing it, else those containing all its words.
func matchTasks(tasks []Task, target string) []Task {
	want := fold(target)
	if want == "" {
		return nil
	}
	var exact, contains, allWords []Task
	words := strings.Fields(want)
	for _, t := range tasks {
		title := fold(t.Title)
		switch {
		case title == want:
			exact = append(exact, t)
		case strings.Contains(title, want):
			contains = append(contains, t)
		case containsAll(title, words):
			allWords = append(allWords, t)
		}
	}
	switch {
	case len(exact) > 0:
		return exact
	case reIDPrefix.MatchString(want):
		if byID := matchID(tasks, strings.TrimPrefix(want, "id ")); len(byID) > 0 {
			return byID
		}
	}
	if len(contains) > 0 {
		return contains
	}
	return allWords
}

// reIDPrefix is a target that may be the start of a task's id: 8 or more
// hex digits (and dashes), as the numbered choices show them.
var reIDPrefix = regexp.MustCompile(`^(?:id )?[0-9a-f][0-9a-f-]{7,35}$`)

// matchID returns the tasks whose id starts with prefix.
func matchID(tasks []Task, prefix string) []Task {
	prefix = strings.ToLower(strings.TrimSpace(prefix))
	var out []Task
	for _, t := range tasks {
		if prefix != "" && strings.HasPrefix(t.ID, prefix) {
			out = append(out, t)
		}
	}
	return out
}

func containsAll(s string, words []string) bool {
	for _, w := range words {
		if !strings.Contains(s, w) {
			return false
		}
	}
	return len(words) > 0
}

// fold lower-cases s, drops quotes and punctuation at its ends and
// collapses its spaces.
func fold(s string) string {
	s = strings.ToLower(unquote(s))
	s = strings.TrimFunc(s, func(r rune) bool { return unicode.IsPunct(r) || unicode.IsSpace(r) })
	return strings.Join(strings.Fields(s), " ")
}

func quoteTitle(s string) string {
	const max = 80
	if utf8.RuneCountInString(s) > max {
		s = string([]rune(s)[:max]) + "…"
	}
	return "“" + s + "”"
}

// errorText turns a tool error ("invalid: title must ...") into a sentence.
func errorText(e string) string {
	if _, msg, ok := strings.Cut(e, ": "); ok {
		e = msg
	}
	e = strings.TrimSpace(e)
	if !strings.HasSuffix(e, ".") {
		e += "."
	}
	return e
}

func toolCall(name string, args map[string]any) *llms.ToolCall {
	data, _ := json.Marshal(args)
	return &llms.ToolCall{Type: "function", FunctionCall: &llms.FunctionCall{Name: name, Arguments: string(data)}}
}

// Numbered choices: when several tasks match, the answer lists them as
// "1. title (id 4333a1b2)" lines, and the next message may pick one. The
// list is read back from that answer (withChoice).

// idLen is how much of an id a choice shows, at least: 8 characters, more
// if another listed task starts the same.
const idLen = 8

// choicesReply asks which of matches the user means, numbered, each with the
// shortest id prefix (at least idLen) that no other task in all shares.
func choicesReply(in Intent, matches, all []Task) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Several tasks match %s:\n", quoteTitle(in.Target))
	for i, t := range matches {
		title := strings.Join(strings.Fields(t.Title), " ")
		if t.Description != nil && strings.TrimSpace(*t.Description) != "" {
			d := strings.Join(strings.Fields(*t.Description), " ")
			if utf8.RuneCountInString(d) > 40 {
				d = string([]rune(d)[:40]) + "…"
			}
			title += ": " + d
		}
		fmt.Fprintf(&b, "%d. %s (id %s)\n", i+1, title, shortID(t.ID, all))
	}
	fmt.Fprintf(&b, "Which one should I %s? Answer with its number (“1”, “the first one”) or its id.",
		map[string]string{IntentComplete: "complete", IntentReopen: "reopen", IntentRename: "rename", IntentDelete: "delete"}[in.Kind])
	return b.String()
}

func shortID(id string, all []Task) string {
	for n := idLen; n < len(id); n++ {
		unique := true
		for _, t := range all {
			if t.ID != id && strings.HasPrefix(t.ID, id[:n]) {
				unique = false
				break
			}
		}
		if unique {
			return id[:n]
		}
	}
	return id
}

// reChoiceLine is one line of a choicesReply.
var reChoiceLine = regexp.MustCompile(`(?m)^(\d+)\. .*\(id ([0-9a-f-]{8,36})\)$`)

// choices returns the id prefixes an answer listed as numbered choices, in
// order; nil if it listed none.
func choices(answer string) []string {
	var ids []string
	for i, m := range reChoiceLine.FindAllStringSubmatch(answer, -1) {
		if m[1] != fmt.Sprint(i+1) {
			return nil
		}
		ids = append(ids, m[2])
	}
	return ids
}

var (
	ordinals = map[string]int{"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10,
		"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "last": -1}
	reChoice = regexp.MustCompile(`(?i)^(?:(?:yes|yeah|ok|okay|that'?s|it'?s)[\s,]+)?(?:the\s+)?(?:(?:number|no\.?|option|choice|#)\s*)?` +
		`(\d{1,4}|[a-z]+)(?:st|nd|rd|th)?\.?(?:\s+(?:one|task|item|of\s+them))?$`)
)

// choiceIndex reads a pick from a numbered list: "2", "#2", "number 2",
// "the second one", "2nd", "the last one". last is the list's length, for
// "last". ok is false for anything else.
func choiceIndex(s string, last int) (n int, ok bool) {
	m := reChoice.FindStringSubmatch(normalize(s))
	if m == nil {
		return 0, false
	}
	word := strings.ToLower(m[1])
	if n, err := strconv.Atoi(word); err == nil {
		return n, true
	}
	n, ok = ordinals[word]
	if n == -1 {
		n = last
	}
	return n, ok
}

// withChoice completes in from the conversation when the previous answer
// listed numbered choices: a message that only picks one ("2", "the first
// one") repeats the request that asked, for that task; a request naming one
// ("delete the second one") acts on it. A number outside the list is
// answered with the list again. Otherwise in is returned as it is.
func withChoice(in Intent, human string, earlier []exchange) Intent {
	if len(earlier) == 0 {
		return in
	}
	ids := choices(earlier[len(earlier)-1].ai)
	if len(ids) == 0 {
		return in
	}
	pick := func(n int, base Intent) Intent {
		if n < 1 || n > len(ids) {
			return Intent{Kind: intentBadChoice, Title: earlier[len(earlier)-1].ai, Target: fmt.Sprint(n)}
		}
		base.TaskID = ids[n-1]
		return base
	}
	if n, ok := choiceIndex(human, len(ids)); ok {
		// The request the list answered: the latest earlier message that was
		// not itself a pick (a pick out of range repeats the list).
		for i := len(earlier) - 1; i >= 0 && len(choices(earlier[i].ai)) > 0; i-- {
			if _, isPick := choiceIndex(earlier[i].human, len(ids)); isPick {
				continue
			}
			if base := ParseIntent(earlier[i].human); base.Target != "" {
				return pick(n, base)
			}
			break
		}
		return in
	}
	if in.Target != "" {
		if n, ok := choiceIndex(in.Target, len(ids)); ok {
			return pick(n, in)
		}
	}
	return in
}

// intentBadChoice is a pick outside the numbered list: Title holds the
// answer that listed it.
const intentBadChoice = "bad_choice"
