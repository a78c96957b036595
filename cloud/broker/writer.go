package broker

import "github.com/c2d-project/c2d/cloud/iothub"

// A session's writer runs only while its queue holds something: most devices are idle most of the
// time, and a goroutine parked per session (with its stack) and a queue allocated up front cost a
// fleet more memory than mochi's own client state (docs/benchmarks.md, "Where the memory goes").

// enqueue appends one PUBLISH to the session's write queue and starts the writer if it is not
// running. False: the queue is full (writeQueue). After the session ended the packet is dropped
// (the core requeues what was in flight), as a write to a closed socket would be.
func (c *conn) enqueue(ob outbound) bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wstopped {
		return true
	}
	if len(c.wq) >= writeQueue {
		return false
	}
	c.wq = append(c.wq, ob)
	if !c.wrunning {
		c.wrunning = true
		c.b.writers.Add(1)
		go c.drain()
	}
	return true
}

// next takes the head of the queue; false once it is empty or the session ended, and then the
// writer is gone (the queue's memory is released with it).
func (c *conn) next() (outbound, bool) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wstopped || len(c.wq) == 0 {
		c.wq = nil
		c.wrunning = false
		return outbound{}, false
	}
	ob := c.wq[0]
	c.wq[0] = outbound{} // let the payload go once written
	c.wq = c.wq[1:]
	return ob, true
}

// stopWriter ends the session's writes: what is queued is dropped, nothing is queued again.
func (c *conn) stopWriter() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wstopped = true
	c.wq = nil
}

// drain writes the queue in order until it is empty. mochi's Client.WritePacket serialises with
// mochi's own writes (CONNACK, SUBACK, PUBACK, PINGRESP) under the client lock, and the socket's
// deadline (1.5 × keep-alive) bounds a write to a stalled device.
func (c *conn) drain() {
	defer c.b.writers.Done()
	for {
		ob, ok := c.next()
		if !ok {
			return
		}
		err := c.cl.WritePacket(ob.pk)
		switch {
		case err == nil:
			if ob.completeOnWrite != "" {
				c.b.settle(c, ob.completeOnWrite, iothub.DispositionComplete, "")
			}
		case c.cl.Closed():
			// The session is ending; OnDisconnect detaches it and the core requeues.
		default:
			c.log.Warn("writing to device failed; dropping the connection", "error", err)
			c.cl.Stop(err)
		}
	}
}
