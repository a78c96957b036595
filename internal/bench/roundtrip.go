package bench

import (
	"context"
	"fmt"
	"time"
)

// roundTrip describes a request/reply between two lightweight clients through a broker with no
// hub: the floor a hub path (a command's, a direct method's) is compared with in the same run.
type roundTrip struct {
	name                   string // client ids are name-req and name-resp; errors say name
	qos                    byte
	reqFilter, replyFilter string
	reqTopic               func(i int) string
	payload                []byte
	// reply gives the responder's answer to a request; it runs on the responder's reader
	// goroutine, so it publishes without waiting for a PUBACK (that would block reading).
	reply func(topic string, p []byte) (string, []byte)
	// respAddr, when set, is where the responder connects instead of addr (a DurableTap in front
	// of the same broker: the tap's own cost, measured).
	respAddr string
}

// measure runs n round trips one at a time after n/20 warm-up ones.
func (rt roundTrip) measure(ctx context.Context, addr string, n int) ([]time.Duration, error) {
	replies := make(chan struct{}, 1)
	req, err := DialLite(addr, LiteOptions{ClientID: rt.name + "-req", CleanSession: true, OnMessage: func(string, []byte) { replies <- struct{}{} }})
	if err != nil {
		return nil, err
	}
	defer req.Close()
	raddr := addr
	if rt.respAddr != "" {
		raddr = rt.respAddr
	}
	var resp *LiteClient
	resp, err = DialLite(raddr, LiteOptions{ClientID: rt.name + "-resp", CleanSession: true, OnMessage: func(topic string, p []byte) {
		t, body := rt.reply(topic, p)
		_, _ = resp.PublishAsync(t, body, rt.qos)
	}})
	if err != nil {
		return nil, err
	}
	defer resp.Close()
	if err := resp.Subscribe(rt.reqFilter, rt.qos, 10*time.Second); err != nil {
		return nil, err
	}
	if err := req.Subscribe(rt.replyFilter, rt.qos, 10*time.Second); err != nil {
		return nil, err
	}
	warm := n / 20
	ds := make([]time.Duration, 0, n)
	for i := 0; i < n+warm; i++ {
		t0 := time.Now()
		if _, err := req.PublishAsync(rt.reqTopic(i), rt.payload, rt.qos); err != nil {
			return nil, err
		}
		select {
		case <-replies:
		case <-time.After(10 * time.Second):
			return nil, fmt.Errorf("%s: no reply within 10s", rt.name)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if i >= warm {
			ds = append(ds, time.Since(t0))
		}
	}
	return ds, nil
}
