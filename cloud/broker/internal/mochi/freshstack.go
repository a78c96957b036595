// c2d's addition to mochi (not upstream): see NOTE.md.

package mqtt

// onFreshStack runs f on a goroutine of its own and waits for it.
//
// A connection's goroutine lives as long as the device stays connected, and Go never shrinks a
// goroutine's stack below what it once needed (a GC halves it at most while a quarter is in use).
// mochi's packet path passes packets.Packet (≈ 800 bytes) by value through six or more calls, so a
// single SUBSCRIBE or CONNECT handled on the connection's goroutine grows it to 32 KiB, kept for
// the connection's life: most of an idle device's memory. Handled on a short-lived goroutine, that
// stack is freed when the packet is done, and the connection's goroutine, parked in Read, stays at
// the size it started with.
func onFreshStack(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}
