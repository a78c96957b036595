package amqp

import (
	"net"
	"slices"
	"testing"

	"github.com/c2d-project/c2d/cloud/amqp/internal/encoding"
	"github.com/c2d-project/c2d/cloud/amqp/internal/frames"
)

type recNode struct {
	nodeBase
	got []string
}

func (r *recNode) settled(_ *link, d *outDelivery, _ encoding.DeliveryState) {
	r.got = append(r.got, d.ref)
}

// Ranged dispositions settle every unsettled delivery in [first, last], serial-number arithmetic
// included (a range may wrap past 2^32-1), each once; a range as wide as 2^32 does not loop.
func TestRangedDisposition(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := newConn(New(Options{}), a)
	s := newSession(c, 0, 0, &frames.PerformBegin{})
	n := &recNode{}
	l := &link{s: s, node: n}
	for id, ref := range map[uint32]string{0xfffffffe: "a", 0xffffffff: "b", 0: "c", 1: "d", 2: "e", 100: "f"} {
		s.unsettled[id] = &outDelivery{link: l, ref: ref}
	}
	disp := func(first, last uint32) []string {
		n.got = nil
		s.disposition(&frames.PerformDisposition{Role: encoding.RoleReceiver, First: first, Last: &last, Settled: true, State: &encoding.StateAccepted{}})
		slices.Sort(n.got)
		return n.got
	}
	if got := disp(0xfffffffe, 1); !slices.Equal(got, []string{"a", "b", "c", "d"}) {
		t.Fatalf("wrapping range settled %v, want a b c d", got)
	}
	if got := disp(0, 1); len(got) != 0 {
		t.Fatalf("settled again: %v (the first settlement is final)", got)
	}
	if got := disp(3, 2); !slices.Equal(got, []string{"e", "f"}) {
		t.Fatalf("range of 2^32 settled %v, want what was left: e f", got)
	}
	if len(s.unsettled) != 0 {
		t.Fatalf("unsettled left: %v", s.unsettled)
	}
}
