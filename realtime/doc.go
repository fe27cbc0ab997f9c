// Package realtime moves bytes from the server to WebSockets. It knows nothing of todos.
//
// A [Hub] owns every socket of one replica. The application publishes a user's
// [Publication] with [Hub.Publish]; the hub sends it through a [Broker] (in process with
// [MemoryBroker], across replicas with [RedisBroker]) to every replica, and each replica
// hands it to the sockets of that user it holds. Local sockets are fed only from the
// broker's callback, so both brokers share one delivery path (as in centrifugal/centrifuge).
//
// Publications with Seq > 0 are durable events of the user's event log: gap-free and
// monotonic per user. The hub sends each of them to a socket exactly once and in order,
// across reconnects ("resume"), lost broker messages and Redis restarts, by reading what
// it missed from a [History]. Publications with Seq == 0 (chat tokens) are best effort.
//
// Each socket has one reader (the goroutine that called [Hub.Serve]) and one writer
// goroutine that drains a bounded queue; a socket whose queue overflows is closed with
// [CloseSlowConsumer], never waited for. The frames the hub handles itself (hello, resume,
// resumed, resync, ping, pong, error) are described on [Hub.Serve]; every other frame is
// passed to the application's [FrameHandler].
package realtime
