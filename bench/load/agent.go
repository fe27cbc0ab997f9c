package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	fws "github.com/fasthttp/websocket"
)

// fakeLLM is an OpenAI-compatible chat-completions endpoint that streams numbered tokens
// ("x<n> ") at a fixed interval and records when it wrote each one, so that the agent
// shape can time token emitted -> chat.token frame received.
type fakeLLM struct {
	srv      *http.Server
	tokens   int           // per completion
	interval time.Duration // between tokens
	emitted  []atomic.Int64
	next     atomic.Int64
	calls    atomic.Int64
}

func startFakeLLM(addr string, tokens int, interval time.Duration, maxTokens int) (*fakeLLM, error) {
	f := &fakeLLM{tokens: tokens, interval: interval, emitted: make([]atomic.Int64, maxTokens)}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("fake LLM on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"object":"list","data":[{"id":"fake","object":"model"}]}`)
	})
	mux.HandleFunc("POST /v1/chat/completions", f.complete)
	f.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go f.srv.Serve(ln)
	return f, nil
}

func (f *fakeLLM) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = f.srv.Shutdown(ctx)
}

const chunkHead = `data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1,"model":"fake","choices":[{"index":0,`

func (f *fakeLLM) complete(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	f.calls.Add(1)
	w.Header().Set("Content-Type", "text/event-stream")
	fl, _ := w.(http.Flusher)
	tick := time.NewTicker(f.interval)
	defer tick.Stop()
	for i := range f.tokens {
		if i > 0 {
			select {
			case <-tick.C:
			case <-r.Context().Done():
				return
			}
		}
		n := f.next.Add(1) - 1
		role := ""
		if i == 0 {
			role = `"role":"assistant",`
		}
		chunk := chunkHead + `"delta":{` + role + `"content":"x` + strconv.FormatInt(n, 10) + ` "},"finish_reason":null}]}` + "\n\n"
		if n < int64(len(f.emitted)) {
			f.emitted[n].Store(since())
		}
		if _, err := io.WriteString(w, chunk); err != nil {
			return
		}
		if fl != nil {
			fl.Flush()
		}
	}
	io.WriteString(w, chunkHead+`"delta":{},"finish_reason":"stop"}]}`+"\n\ndata: [DONE]\n\n")
}

// agentResult is the agent streaming shape's outcome.
type agentResult struct {
	Chats    int
	Tokens   int64 // emitted by the fake model
	Interval time.Duration
	Sockets  []agentSocket
	CPU      cpuUse
	Notes    []string
}

type agentSocket struct {
	Where    string // "same replica" or "across replicas"
	Received int64
	P50, P90 time.Duration
	P99, Max time.Duration
}

// agentShape opens one socket of one user on each replica, runs chats through POST
// /api/chat on the first replica (its agent streams from the fake model), and times
// every chat.token frame on both sockets from the moment the model wrote the token.
func (r *runner) agentShape(ctx context.Context) error {
	if r.llm == nil {
		return errors.New("no fake model: start the load tool with -fake-llm and the replicas with LLM_PROVIDER=openai LLM_BASE_URL=http://<that address>/v1")
	}
	users, err := r.setup.users(ctx, "agent", 1, time.Hour)
	if err != nil {
		return err
	}
	u := users[0]
	d := &fws.Dialer{HandshakeTimeout: 10 * time.Second}
	where := []string{"same replica", "across replicas"}
	hists := make([]*hist, len(r.wsURL))
	var readers sync.WaitGroup
	var conns []*fws.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		readers.Wait()
	}()
	for i, url := range r.wsURL {
		s, err := dialAndGreet(ctx, d, url, u.Token)
		if err != nil {
			return fmt.Errorf("socket on %s: %w", url, err)
		}
		conns = append(conns, s.conn)
		h := &hist{}
		hists[i] = h
		readers.Go(func() { r.llm.readTokens(s.conn, h) })
	}
	client := &http.Client{Timeout: callTimeout}
	first := r.llm.next.Load()
	c0 := r.cpu.sample()
	r.progress("agent: %d chats of %d tokens every %v through %s", r.c.agentChats, r.llm.tokens, r.llm.interval, r.httpURL[0])
	res := agentResult{Chats: r.c.agentChats, Interval: r.llm.interval}
	for i := range r.c.agentChats {
		if ctx.Err() != nil {
			break
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, r.httpURL[0]+"/api/chat",
			bytes.NewReader(fmt.Appendf(nil, `{"message":"benchmark chat %d: say something"}`, i)))
		req.Header.Set("Authorization", "Bearer "+u.Token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("POST /api/chat: %w", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("POST /api/chat: %s %s", resp.Status, bytes.TrimSpace(body))
		}
	}
	res.Tokens = r.llm.next.Load() - first
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && (int64(hists[0].Count()) < res.Tokens || int64(hists[len(hists)-1].Count()) < res.Tokens) {
		time.Sleep(20 * time.Millisecond)
	}
	res.CPU = usage(c0, r.cpu.sample())
	for i, h := range hists {
		w := where[min(i, 1)]
		res.Sockets = append(res.Sockets, agentSocket{Where: fmt.Sprintf("%s (%s)", w, r.c.replicas[i]), Received: int64(h.Count()),
			P50: h.Quantile(0.5), P90: h.Quantile(0.9), P99: h.Quantile(0.99), Max: h.Max()})
		if int64(h.Count()) != res.Tokens {
			res.Notes = append(res.Notes, fmt.Sprintf("socket on %s received %d of %d tokens", r.c.replicas[i], h.Count(), res.Tokens))
		}
	}
	r.out.Agent = &res
	for _, s := range res.Sockets {
		r.progress("agent: %s: %d tokens, p50 %v p99 %v", s.Where, s.Received, s.P50, s.P99)
	}
	return nil
}

var deltaKey = []byte(`"delta":"x`)

// readTokens times the chat.token frames of a socket.
func (f *fakeLLM) readTokens(conn *fws.Conn, h *hist) {
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		now := since()
		if !bytes.HasPrefix(data, []byte(`{"type":"chat.token"`)) {
			continue
		}
		i := bytes.Index(data, deltaKey)
		if i < 0 {
			continue
		}
		n, ok := leadingInt(data[i+len(deltaKey):])
		if !ok || n >= int64(len(f.emitted)) {
			continue
		}
		if t := f.emitted[n].Load(); t != 0 {
			h.Record(time.Duration(now - t))
		}
	}
}
