package conn

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Twin topics (Azure).
const (
	twinResponseFilter = "$iothub/twin/res/#"
	twinReportedTopic  = "$iothub/twin/PATCH/properties/reported/?$rid="
)

// ErrReportRefused wraps a hub's refusal of a reported-properties patch.
var ErrReportRefused = errors.New("reported properties refused")

// twinCalls matches twin answers to the requests waiting for them.
type twinCalls struct {
	mu      sync.Mutex
	next    uint64
	waiting map[string]chan twinAnswer
}

type twinAnswer struct {
	status int
	body   []byte
}

// onTwinResponse runs in paho's handler: it only hands the answer over.
func (c *Client) onTwinResponse(m paho.Message) {
	rest, ok := strings.CutPrefix(m.Topic(), "$iothub/twin/res/")
	if !ok {
		return
	}
	st, query, ok := strings.Cut(rest, "/?")
	status, err := strconv.Atoi(st)
	if !ok || err != nil {
		return
	}
	var rid string
	for _, kv := range strings.Split(query, "&") {
		if v, ok := strings.CutPrefix(kv, "$rid="); ok {
			rid = v
		}
	}
	c.twin.mu.Lock()
	ch := c.twin.waiting[rid]
	delete(c.twin.waiting, rid)
	c.twin.mu.Unlock()
	if ch != nil {
		ch <- twinAnswer{status: status, body: m.Payload()}
	}
}

// Report sends a reported-properties patch and waits (at most timeout) for the hub's 204. Against
// a broker that serves no twins it times out; the caller reports again on the next change.
func (c *Client) Report(patch []byte, timeout time.Duration) error {
	a, err := c.twinRequest(twinReportedTopic, patch, timeout)
	if err != nil {
		return err
	}
	if a.status >= 200 && a.status < 300 {
		return nil
	}
	return fmt.Errorf("%w: status %d: %s", ErrReportRefused, a.status, truncate(string(a.body)))
}

// twinRequest publishes topicPrefix+rid and waits for the answer with that $rid.
func (c *Client) twinRequest(topicPrefix string, body []byte, timeout time.Duration) (twinAnswer, error) {
	c.mu.Lock()
	g := c.gen
	c.mu.Unlock()
	if !c.connected.Load() {
		return twinAnswer{}, errors.New("not connected")
	}
	c.twin.mu.Lock()
	if c.twin.waiting == nil {
		c.twin.waiting = map[string]chan twinAnswer{}
	}
	c.twin.next++
	rid := "r" + strconv.FormatUint(c.twin.next, 16)
	ch := make(chan twinAnswer, 1)
	c.twin.waiting[rid] = ch
	c.twin.mu.Unlock()
	defer func() {
		c.twin.mu.Lock()
		delete(c.twin.waiting, rid)
		c.twin.mu.Unlock()
	}()
	tok := g.client.Publish(topicPrefix+rid, 0, false, body)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return twinAnswer{}, fmt.Errorf("twin request: %w", err)
		}
	case <-t.C:
		return twinAnswer{}, errors.New("twin request: publish not written in time")
	}
	select {
	case a := <-ch:
		return a, nil
	case <-t.C:
		return twinAnswer{}, fmt.Errorf("twin request: no answer from the hub within %v", timeout)
	case <-g.ended:
		return twinAnswer{}, errors.New("twin request: connection lost")
	}
}

// subscribeTwin subscribes to twin answers when Options.Twin is set (failures only logged).
func (c *Client) subscribeTwin(g *generation) {
	if !c.opts.Twin {
		return
	}
	filters := map[string]byte{twinResponseFilter: 0}
	if c.opts.Desired != nil {
		filters[twinDesiredFilter] = 0
	}
	st := g.client.SubscribeMultiple(filters, nil)
	t := time.NewTimer(c.opts.ConnectTimeout)
	defer t.Stop()
	select {
	case <-st.Done():
		if err := st.Error(); err != nil {
			c.log.Warn("twin subscription failed; reported properties will not be confirmed", "err", err)
		}
	case <-t.C:
		c.log.Warn("no SUBACK for the twin subscription")
	}
}

const (
	twinGetTopic      = "$iothub/twin/GET/?$rid="
	twinDesiredFilter = "$iothub/twin/PATCH/properties/desired/#"
)

// GetTwin asks the hub for the twin ({"desired":{…},"reported":{…}}) and waits at most timeout.
func (c *Client) GetTwin(timeout time.Duration) ([]byte, error) {
	a, err := c.twinRequest(twinGetTopic, []byte(" "), timeout)
	if err != nil {
		return nil, err
	}
	if a.status != 200 {
		return nil, fmt.Errorf("%w: twin GET: status %d: %s", ErrReportRefused, a.status, truncate(string(a.body)))
	}
	return a.body, nil
}

// onDesired hands a desired-properties notification to Options.Desired (never blocks).
func (c *Client) onDesired(m paho.Message) {
	if c.opts.Desired != nil {
		c.opts.Desired(m.Payload())
	}
}
