package amqp

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/c2d-project/c2d/cloud/amqp/internal/encoding"
	"github.com/c2d-project/c2d/cloud/amqp/internal/frames"
	"github.com/c2d-project/c2d/cloud/hub"
)

// seedFrames are well-formed frames a real client sends, encoded by the vendored codec.
func seedFrames(t testing.TB) [][]byte {
	t.Helper()
	to, reply := "/devices/pi-1/messages/devicebound", "cbs"
	msg, err := encodeMessage(&frames.Message{
		Properties:            &frames.MessageProperties{MessageID: encoding.UUID{1}, To: &to, ReplyTo: &reply},
		ApplicationProperties: map[string]any{"iothub-ack": "full", "operation": "put-token"},
		Data:                  [][]byte{[]byte("led on")},
	})
	if err != nil {
		t.Fatal(err)
	}
	id, format := uint32(0), uint32(0)
	rc := uint16(0)
	var out [][]byte
	for _, fb := range []frames.FrameBody{
		&frames.PerformOpen{ContainerID: "c", Hostname: "hub.test", MaxFrameSize: 65536, IdleTimeout: time.Minute},
		&frames.PerformBegin{RemoteChannel: &rc, NextOutgoingID: 1, IncomingWindow: 100, OutgoingWindow: 100, HandleMax: 10},
		&frames.PerformAttach{Name: "l", Handle: 1, Role: encoding.RoleSender, Target: &frames.Target{Address: "$cbs"}, Source: &frames.Source{Address: "x"}},
		&frames.PerformFlow{IncomingWindow: 10, NextOutgoingID: 1, OutgoingWindow: 10},
		&frames.PerformTransfer{Handle: 1, DeliveryID: &id, DeliveryTag: []byte("t"), MessageFormat: &format, Payload: msg},
		&frames.PerformDisposition{Role: encoding.RoleReceiver, First: 0, Settled: true, State: &encoding.StateRejected{Error: &encoding.Error{Condition: "x", Description: "y"}}},
		&frames.PerformDetach{Handle: 1, Closed: true},
		&frames.PerformEnd{},
		&frames.PerformClose{Error: &encoding.Error{Condition: "amqp:internal-error"}},
		&frames.SASLInit{Mechanism: "PLAIN", InitialResponse: []byte("\x00service@sas.root.hub\x00SharedAccessSignature sr=hub&sig=x&se=1&skn=service")},
	} {
		typ := frames.TypeAMQP
		if isSASL(fb) {
			typ = frames.TypeSASL
		}
		b, err := encodeFrame(typ, 0, fb)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// The seed corpora in testdata/fuzz are seedFrames' frames (and a few broken ones), written once.
func TestSeedCorpusPresent(t *testing.T) {
	for _, dir := range []string{"FuzzFrame", "FuzzConnection"} {
		ents, err := os.ReadDir(filepath.Join("testdata", "fuzz", dir))
		if err != nil || len(ents) == 0 {
			t.Fatalf("testdata/fuzz/%s: %v (want a seed corpus)", dir, err)
		}
	}
}

// FuzzFrame feeds arbitrary bytes to the frame reader and the performative and message decoders:
// they return errors, never panic or allocate beyond the frame size.
func FuzzFrame(f *testing.F) {
	for _, b := range seedFrames(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, body, err := readFrame(bufio.NewReader(bytes.NewReader(b)), 64<<10)
		if err != nil || body == nil {
			return
		}
		fb, err := decodeBody(body)
		if err != nil {
			return
		}
		if tr, ok := fb.(*frames.PerformTransfer); ok {
			if m, err := decodeMessage(tr.Payload); err == nil {
				_, _, _ = toSendRequest(m, time.Now())
			}
		}
	})
}

// FuzzConnection runs a whole server connection on arbitrary client bytes (after a valid header):
// the server must answer or close, never panic, hang or leak the connection.
func FuzzConnection(f *testing.F) {
	seeds := seedFrames(f)
	f.Add(append(append([]byte{}, headerAMQP...), bytes.Join(seeds[:5], nil)...))
	f.Add(append(append([]byte{}, headerSASL...), seeds[9]...))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	h, err := hub.Open(context.Background(), f.TempDir(), hub.Config{HostName: "hub.test"}, hub.Events{})
	if err != nil {
		f.Fatal(err)
	}
	defer h.Close()
	srv := New(Options{Hub: h, HostName: "hub.test", IdleTimeout: 300 * time.Millisecond})
	defer srv.Close()
	f.Fuzz(func(t *testing.T, b []byte) {
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.ServeConn(server)
		}()
		go func() {
			_, _ = client.Write(b)
			_ = client.Close() // the peer hangs up after its bytes: EOF mid-frame included
		}()
		// Drain what the server answers until it closes.
		go func() {
			buf := make([]byte, 4096)
			for {
				if _, err := client.Read(buf); err != nil {
					return
				}
			}
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("connection still served 10 s after the client hung up")
		}
	})
}
