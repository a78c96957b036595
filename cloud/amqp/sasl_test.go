package amqp

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/amqp/internal/encoding"
	"github.com/c2d-project/c2d/cloud/amqp/internal/frames"
	"github.com/c2d-project/c2d/cloud/hub"
)

// SASL MSSBCBS, as Python's uamqp and Azure's C SDK start: mechanisms offered, outcome ok, then
// the AMQP header and open (authentication follows on $cbs).
func TestSASLMSSBCBS(t *testing.T) {
	h, err := hub.Open(context.Background(), t.TempDir(), hub.Config{HostName: "hub.test"}, hub.Events{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	srv := New(Options{Hub: h, HostName: "hub.test"})
	defer srv.Close()
	addr, err := srv.Listen("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(nc)
	write := func(typ frames.Type, fb frames.FrameBody) {
		t.Helper()
		b, err := encodeFrame(typ, 0, fb)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nc.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	read := func() frames.FrameBody {
		t.Helper()
		_, body, err := readFrame(r, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		fb, err := decodeBody(body)
		if err != nil {
			t.Fatal(err)
		}
		return fb
	}
	header := func(want []byte) {
		t.Helper()
		var h [8]byte
		if _, err := io.ReadFull(r, h[:]); err != nil || !bytes.Equal(h[:], want) {
			t.Fatalf("header %q (%v), want %q", h, err, want)
		}
	}
	if _, err := nc.Write(headerSASL); err != nil {
		t.Fatal(err)
	}
	header(headerSASL)
	mech, ok := read().(*frames.SASLMechanisms)
	if !ok || len(mech.Mechanisms) == 0 || mech.Mechanisms[0] != "MSSBCBS" {
		t.Fatalf("mechanisms %+v, want MSSBCBS first", mech)
	}
	write(frames.TypeSASL, &frames.SASLInit{Mechanism: "MSSBCBS", Hostname: "hub.test"})
	if out, ok := read().(*frames.SASLOutcome); !ok || out.Code != encoding.CodeSASLOK {
		t.Fatalf("outcome %+v, want ok", out)
	}
	if _, err := nc.Write(headerAMQP); err != nil {
		t.Fatal(err)
	}
	header(headerAMQP)
	write(frames.TypeAMQP, &frames.PerformOpen{ContainerID: "uamqp-like", Hostname: "hub.test"})
	// The defaults a server without options announces: 4 min idle timeout, 256 KiB frames.
	if open, ok := read().(*frames.PerformOpen); !ok || open.ContainerID != "c2d-hub" || open.IdleTimeout != 4*time.Minute || open.MaxFrameSize != 256<<10 {
		t.Fatalf("open %+v", open)
	}
	// An unknown mechanism is refused with outcome auth.
	nc2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	_ = nc2.SetDeadline(time.Now().Add(10 * time.Second))
	nc, r = nc2, bufio.NewReader(nc2)
	if _, err := nc.Write(headerSASL); err != nil {
		t.Fatal(err)
	}
	header(headerSASL)
	read()
	write(frames.TypeSASL, &frames.SASLInit{Mechanism: "SCRAM-SHA-256"})
	if out, ok := read().(*frames.SASLOutcome); !ok || out.Code != encoding.CodeSASLAuth {
		t.Fatalf("outcome for SCRAM %+v, want auth", out)
	}
}
