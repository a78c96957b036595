// c2d's addition to mochi (not upstream): see NOTE.md.

package mqtt

import "time"

// onFreshStack runs f on a goroutine of its own and waits for it.
//
// A connection's goroutine lives as long as the device stays connected, and Go never shrinks a
// goroutine's stack below what it once needed (a GC halves it at most while a quarter is in use).
// mochi's packet path passes packets.Packet (≈ 800 bytes) by value through six or more calls, so a
// single CONNECT or SUBSCRIBE handled on the connection's goroutine grows it to 32 KiB, kept for
// the connection's life: most of an idle device's memory. Handled on a short-lived goroutine, that
// stack is freed when the handshake is done, and the connection's goroutine, parked in Read, stays
// at the size it started with.
func onFreshStack(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}

// packetStacks runs each packet's decoding and handling, for the same reason as onFreshStack, on
// a goroutine whose stack has already grown for it: a new goroutine per packet would grow its
// stack from the start each time (≈ 4 µs a packet, against ≈ 0.5 µs handed to a waiting worker).
// A worker exits after packetWorkerIdle without work, so a burst leaves no workers behind. The
// handshake does not use the pool (onFreshStack): a connect storm would leave a worker per
// concurrent handshake idling, each with a grown stack, for packetWorkerIdle.
var packetStacks = stackPool{jobs: make(chan stackJob)}

const packetWorkerIdle = 2 * time.Second

type stackPool struct {
	jobs chan stackJob // unbuffered: a send succeeds only to a worker waiting for work
}

// stackJob is one call: f, then a send on done (buffered, one slot). Passed by value, so that a
// hand-off to a waiting worker allocates nothing.
type stackJob struct {
	f    func()
	done chan struct{}
}

// run runs j.f on a worker of the pool, a new one if none is waiting, and waits for it.
func (p *stackPool) run(j stackJob) {
	select {
	case p.jobs <- j:
	default:
		go p.work(j)
	}
	<-j.done
}

func (p *stackPool) work(j stackJob) {
	idle := time.NewTimer(packetWorkerIdle)
	defer idle.Stop()
	for {
		j.f()
		j.done <- struct{}{}
		idle.Reset(packetWorkerIdle)
		select {
		case j = <-p.jobs:
		case <-idle.C:
			return
		}
	}
}
