package hub

import (
	"fmt"
	"testing"
)

// Attach locks are per device, not per node: one device always gets the same lock, and a fleet's
// devices spread over the stripes, so a reconnect storm is not one commit after the other.
func TestAttachLocksSpreadDevicesOverTheStripes(t *testing.T) {
	var a attachLocks
	stripes := map[string]bool{}
	for i := range 1000 {
		id := fmt.Sprintf("pi-%04d", i)
		l := a.of(id)
		if a.of(id) != l {
			t.Fatalf("%s got two different locks", id)
		}
		stripes[fmt.Sprintf("%p", l)] = true
	}
	// 1,000 ids over 256 stripes leave ≈ 5 empty by chance; half of them empty means no spread.
	if len(stripes) < 200 {
		t.Fatalf("1000 devices share %d of %d locks", len(stripes), len(a.mu))
	}
}
