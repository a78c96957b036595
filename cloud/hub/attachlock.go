package hub

import "sync"

// attachLocks serialises Attach, Detach and the drops of one device's session, so a device's
// hand-over is ordered, without serialising different devices: in a cluster an attach holds its
// lock across the claim's commit (and a detach across returning the locks), and one lock for the
// whole node made a reconnect storm — every board of a dead node arriving at once — one commit
// after the other. Striped: a fixed set of mutexes, a device always on the same one.
type attachLocks struct{ mu [256]sync.Mutex }

func (a *attachLocks) of(deviceID string) *sync.Mutex {
	h := uint32(2166136261) // FNV-1a
	for i := 0; i < len(deviceID); i++ {
		h = (h ^ uint32(deviceID[i])) * 16777619
	}
	return &a.mu[h%uint32(len(a.mu))]
}
