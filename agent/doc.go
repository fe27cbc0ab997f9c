// Package agent manages a user's todos on behalf of an AI: the todo tools,
// defined once (name, description, JSON Schema of the arguments, handler),
// and the MCP server that serves them to outside clients (Claude Desktop,
// the MCP Inspector, IDE assistants) over stdio or streamable HTTP. The chat
// agent calls the very same tools in-process.
//
// The package declares what it needs of the todo service (Todos); app wires
// in *store.Todos, the one change path, so a change made by a tool is
// written with its event and published like any REST change.
//
// The user a tool acts for never comes from the model or the MCP client:
// tools take it as a parameter, and the MCP handlers read it from the
// context (WithUser), where the transport put it after authenticating the
// caller. A user_id argument, if a client sends one, is ignored.
package agent
