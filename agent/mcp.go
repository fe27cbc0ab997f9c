package agent

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/evotodo/evo/store"
)

type userKey struct{}

// WithUser returns a context carrying the authenticated user whose todos
// the MCP tool handlers manage. Transports call it after authenticating
// the caller: per request over HTTP, once per process over stdio.
func WithUser(ctx context.Context, userID string) context.Context {
	return context.WithValue(ctx, userKey{}, userID)
}

// UserFrom returns the user put in ctx by WithUser; false if there is none.
func UserFrom(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(userKey{}).(string)
	return id, ok && id != ""
}

// instructions tell an MCP client's model what the server is for.
const instructions = "Evo manages the signed-in user's todo list. Use list_tasks to find a task's id " +
	"before completing, updating or deleting it; task ids are UUIDs. Every change reaches the user's other " +
	"devices at once."

// NewMCPServer returns an MCP server named "evo" offering tools, each with
// its raw JSON Schema. A call runs as the user in its context (WithUser);
// a result carries the tool's data as structured content and as JSON text,
// after the short summary. Failures, a panic included, are MCP tool errors
// (isError) whose text is "code: message" with a store error code; opts
// (hooks, middleware) are applied after Evo's own.
func NewMCPServer(tools []Tool, version string, opts ...server.ServerOption) *server.MCPServer {
	opts = append([]server.ServerOption{
		server.WithToolCapabilities(false),
		server.WithInstructions(instructions),
		server.WithRecovery(),
	}, opts...)
	s := server.NewMCPServer("evo", version, opts...)
	for _, t := range tools {
		s.AddTool(mcpTool(t), handler(t))
	}
	return s
}

func mcpTool(t Tool) mcp.Tool {
	tool := mcp.NewToolWithRawSchema(t.Name, t.Description, t.Schema)
	tool.Annotations = mcp.ToolAnnotation{
		ReadOnlyHint:    new(t.ReadOnly),
		DestructiveHint: new(t.Destructive),
		OpenWorldHint:   new(false),
	}
	return tool
}

// handler adapts a Tool to mcp-go. It never returns an error: whatever goes
// wrong, the client gets a tool error it can show to its model.
func handler(t Tool) server.ToolHandlerFunc {
	return func(ctx context.Context, req mcp.CallToolRequest) (res *mcp.CallToolResult, _ error) {
		defer func() {
			if r := recover(); r != nil {
				res = ErrorResult(fmt.Errorf("tool %s panicked: %v", t.Name, r))
			}
		}()
		userID, ok := UserFrom(ctx)
		if !ok {
			return ErrorResult(errNoUser), nil
		}
		args, err := rawArguments(req)
		if err != nil {
			return ErrorResult(err), nil
		}
		r, err := t.Run(ctx, userID, args)
		if err != nil {
			return ErrorResult(err), nil
		}
		return SuccessResult(r), nil
	}
}

// rawArguments returns the call's arguments as JSON: as they came over the
// wire, or encoded again when an in-process client passed Go values.
func rawArguments(req mcp.CallToolRequest) (json.RawMessage, error) {
	if len(req.Params.RawArguments) > 0 {
		return req.Params.RawArguments, nil
	}
	if raw, ok := req.Params.Arguments.(json.RawMessage); ok {
		return raw, nil
	}
	data, err := json.Marshal(req.Params.Arguments)
	if err != nil {
		return nil, store.Errorf(store.CodeBadRequest, "arguments must be a JSON object")
	}
	return data, nil
}

// SuccessResult turns a tool's result into an MCP result: the data as
// structured content, and as text content the summary followed by the data
// as JSON (clients that ignore structured content still see every field).
func SuccessResult(r Result) *mcp.CallToolResult {
	data, err := json.Marshal(r.Data)
	if err != nil {
		return ErrorResult(fmt.Errorf("encode tool result: %w", err))
	}
	var content []mcp.Content
	if r.Text != "" {
		content = append(content, mcp.NewTextContent(r.Text))
	}
	content = append(content, mcp.NewTextContent(string(data)))
	return &mcp.CallToolResult{Content: content, StructuredContent: json.RawMessage(data)}
}

// ToolError is the structured content of a failed call.
type ToolError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// ErrorResult turns err into an MCP tool error. The text reads
// "code: message", such as "not_found: task not found"; anything that is
// not a *store.Error is "internal: internal error", its details withheld.
func ErrorResult(err error) *mcp.CallToolResult {
	e := ToolError{Code: store.ErrorCode(err), Message: store.ErrorMessage(err), Field: store.ErrorField(err)}
	res := mcp.NewToolResultError(e.Code + ": " + e.Message)
	res.StructuredContent = map[string]ToolError{"error": e}
	return res
}
