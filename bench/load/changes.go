package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// changer makes todo changes through the REST API of the replicas, round-robin.
type changer struct {
	client *restClient
	users  []benchUser
	mode   string      // create, update or mixed
	cf     *centrifugo // not nil: a change is a publication through Centrifugo's API

	mu    sync.Mutex
	todos [][]string // the last todosPerUser todo ids of each user, created by the run
	count []int      // changes made per user
}

// todosPerUser is how many of a user's todos updates rotate over: concurrent updates of
// one user (shape c) should not all queue on the same todo row's lock.
const todosPerUser = 16

func newChanger(client *restClient, users []benchUser, mode string, cf *centrifugo) *changer {
	return &changer{client: client, users: users, mode: mode, cf: cf, todos: make([][]string, len(users)), count: make([]int, len(users))}
}

// changeStats is what a change window did.
type changeStats struct {
	made     int64 // changes that succeeded
	errors   int64
	firstErr string
	expected int64         // deliveries they owe: sockets of their user, summed
	start    int64         // since() at the first change
	took     time.Duration // from the first change due to the last one made
	rest     *hist         // REST call latency
}

// run makes changes at perSec for dur, open loop (change j is due at j/perSec), with at
// most inflight REST calls at once, and waits for the calls in flight. sockets[u] is the
// number of live sockets of user u.
func (c *changer) run(ctx context.Context, m *measure, perSec float64, dur time.Duration, inflight int, sockets []int) *changeStats {
	st := &changeStats{rest: &hist{}}
	total := int(perSec * dur.Seconds())
	total = min(total, len(m.starts))
	var made, errs, expected atomic.Int64
	var errOnce sync.Once
	sem := make(chan struct{}, inflight)
	var wg sync.WaitGroup
	start := time.Now()
	st.start = since()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	j := 0
loop:
	for j < total {
		due := int(time.Since(start).Seconds() * perSec)
		for ; j < total && j <= due; j++ {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				break loop
			}
			wg.Add(1)
			go func(j int) {
				defer func() { <-sem; wg.Done() }()
				u := j % len(c.users)
				t0 := time.Now()
				err := c.change(m, j, u)
				st.rest.Record(time.Since(t0))
				if err != nil {
					errs.Add(1)
					errOnce.Do(func() { st.firstErr = err.Error() })
					return
				}
				made.Add(1)
				expected.Add(int64(sockets[u]))
			}(j)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			break loop
		}
	}
	st.took = time.Since(start)
	wg.Wait()
	st.made, st.errors, st.expected = made.Load(), errs.Load(), expected.Load()
	return st
}

// change makes change j for user u: a create or an update (of one of the user's last
// todosPerUser todos, in turn) whose title names j.
func (c *changer) change(m *measure, j, u int) error {
	if c.cf != nil {
		return c.publish(m, j, u)
	}
	c.mu.Lock()
	k := c.count[u]
	c.count[u]++
	var id string
	if ids := c.todos[u]; len(ids) > 0 {
		id = ids[(k/2)%len(ids)]
	}
	c.mu.Unlock()
	update := id != "" && (c.mode == "update" || c.mode == "mixed" && k%2 == 1)
	title := "bench " + m.tag + " " + strconv.Itoa(j)
	replica := j % len(c.client.hosts)
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer func() { fasthttp.ReleaseRequest(req); fasthttp.ReleaseResponse(resp) }()
	if update {
		c.client.request(req, replica, fasthttp.MethodPut, "/api/todos/"+id, c.users[u].Token, fmt.Appendf(nil, `{"title":%q}`, title))
	} else {
		c.client.request(req, replica, fasthttp.MethodPost, "/api/todos", c.users[u].Token, fmt.Appendf(nil, `{"title":%q,"description":"made by the load tool"}`, title))
	}
	m.starts[j].Store(since())
	if err := c.client.do(replica, req, resp); err != nil {
		return err
	}
	if sc := resp.StatusCode(); sc != fasthttp.StatusOK && sc != fasthttp.StatusCreated {
		return fmt.Errorf("%s %s: %s %s", req.Header.Method(), req.URI().Path(), status(sc), bytes.TrimSpace(resp.Body()))
	}
	if !update {
		var t struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(resp.Body(), &t) == nil && t.ID != "" {
			c.mu.Lock()
			ids := append(c.todos[u], t.ID)
			c.todos[u] = ids[max(0, len(ids)-todosPerUser):]
			c.mu.Unlock()
		}
	}
	return nil
}

// publish makes change j for user u on Centrifugo: a publication to the user's channel.
func (c *changer) publish(m *measure, j, u int) error {
	replica := j % len(c.client.hosts)
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer func() { fasthttp.ReleaseRequest(req); fasthttp.ReleaseResponse(resp) }()
	c.cf.publish(req, c.client.httpURL[replica], c.users[u], "bench "+m.tag+" "+strconv.Itoa(j))
	m.starts[j].Store(since())
	if err := c.client.do(replica, req, resp); err != nil {
		return err
	}
	return publishError(resp)
}
