// Package chaos holds Evo's fault test (build tag chaos, `make chaos`): two
// replicas of the release binary on a private PostgreSQL cluster and a
// private Redis, hundreds of sockets tracking every event by seq, a stream
// of changes through REST, MCP and chat, while replicas are SIGKILLed,
// Redis restarts, PostgreSQL stops, and sockets are dropped. At the end
// every socket's view must equal the database's event log. See
// chaos_test.go; it shares nothing with the machine's own PostgreSQL and
// Redis, which other tests use.
package chaos
