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
// A worker exits after packetWorkerIdle without work, so a burst leaves no workers behind.
var packetStacks = stackPool{jobs: make(chan func())}

const packetWorkerIdle = 2 * time.Second

type stackPool struct {
	jobs chan func() // unbuffered: a send succeeds only to a worker waiting for work
}

// run runs f on a worker of the pool, a new one if none is waiting, and waits for it.
func (p *stackPool) run(f func()) {
	done := make(chan struct{})
	job := func() {
		defer close(done)
		f()
	}
	select {
	case p.jobs <- job:
	default:
		go p.work(job)
	}
	<-done
}

func (p *stackPool) work(job func()) {
	idle := time.NewTimer(packetWorkerIdle)
	defer idle.Stop()
	for {
		job()
		idle.Reset(packetWorkerIdle)
		select {
		case job = <-p.jobs:
		case <-idle.C:
			return
		}
	}
}
