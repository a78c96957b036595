package amqp

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/gorilla/websocket"

	"github.com/c2d-project/c2d/cloud/hub"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// chunkConn writes its stream n bytes per WebSocket message: AMQP frames then span messages.
type chunkConn struct {
	net.Conn
	n int
}

func (c chunkConn) Write(p []byte) (int, error) {
	for off := 0; off < len(p); off += c.n {
		if _, err := c.Conn.Write(p[off:min(off+c.n, len(p))]); err != nil {
			return off, err
		}
	}
	return len(p), nil
}

func wsDial(ctx context.Context, t *testing.T, hs *httptest.Server) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{WebSocketProtocol}}
	ws, _, err := d.DialContext(ctx, "ws"+strings.TrimPrefix(hs.URL, "http")+WebSocketPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ws
}

// wsHub is a hub with the AMQP server's WebSocket endpoint on a real socket.
func wsHub(t *testing.T) (*hub.Hub, *httptest.Server) {
	t.Helper()
	h, err := hub.Open(context.Background(), t.TempDir(), hub.Config{HostName: "hub.test"}, hub.Events{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	srv := New(Options{Hub: h, HostName: "hub.test"})
	t.Cleanup(func() { srv.Close() })
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return h, hs
}

// wsSession opens AMQP over a WebSocket to hs and puts a token signed with key for resource
// (skn: the policy's name, "" for a device's key). stream makes the client's byte stream of the
// WebSocket (nil: newWSConn).
func wsSession(ctx context.Context, t *testing.T, hs *httptest.Server, stream func(*websocket.Conn) net.Conn, resource, key, skn string) *goamqp.Session {
	t.Helper()
	ws := wsDial(ctx, t, hs)
	if stream == nil {
		stream = func(ws *websocket.Conn) net.Conn { return newWSConn(ws) }
	}
	nc := stream(ws)
	c, err := goamqp.NewConn(ctx, nc, &goamqp.ConnOptions{SASLType: goamqp.SASLTypeAnonymous()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	s, err := c.NewSession(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := iothub.NewSASToken(resource, key, skn, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if code, desc := cbsPut(t, s, resource, tok); code != 200 {
		t.Fatalf("put-token for %s: %d %s", resource, code, desc)
	}
	return s
}

// AMQPWSB10 is a byte stream over binary messages: a frame may fill one message larger than any
// read buffer, or be spread over many small ones, and a text message in between is skipped.
func TestWebSocketStreamAcrossMessages(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h, hs := wsHub(t)
	dev, _, err := h.PutDevice(ctx, iothub.Device{DeviceID: "ws-dev"}, "")
	if err != nil {
		t.Fatal(err)
	}

	// The service: a text message first, then each frame in one binary message; the 60 KB
	// transfer is many times the server's 4 KiB read buffer.
	pol, _ := h.Policy("service")
	ss := wsSession(ctx, t, hs, func(ws *websocket.Conn) net.Conn {
		if err := ws.WriteMessage(websocket.TextMessage, []byte("not AMQP")); err != nil {
			t.Fatal(err)
		}
		return newWSConn(ws)
	}, "hub.test", pol.PrimaryKey, pol.Name)
	snd, err := ss.NewSender(ctx, "/messages/devicebound", nil)
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 60_000)
	for i := range body {
		body[i] = byte(rand.IntN(256))
	}
	to := "/devices/ws-dev/messages/devicebound"
	if err := snd.Send(ctx, &goamqp.Message{
		Properties: &goamqp.MessageProperties{MessageID: "big", To: &to},
		Data:       [][]byte{body},
	}, nil); err != nil {
		t.Fatalf("send 60 KB over WebSocket: %v", err)
	}

	// The device: its stream 7 bytes per message.
	ds := wsSession(ctx, t, hs, func(ws *websocket.Conn) net.Conn { return chunkConn{newWSConn(ws), 7} },
		"hub.test/devices/ws-dev", dev.Authentication.SymmetricKey.PrimaryKey, "")
	rcv, err := ds.NewReceiver(ctx, "/devices/ws-dev/messages/devicebound", nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := rcv.Receive(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.GetData(); !bytes.Equal(got, body) {
		t.Fatalf("device received %d bytes, not the 60000 sent", len(got))
	}
	if err := rcv.AcceptMessage(ctx, m); err != nil {
		t.Fatal(err)
	}
	if st, err := h.WaitSettled(ctx, "ws-dev", "big"); err != nil || st.Outcome != iothub.StatusSuccess {
		t.Fatalf("after accept: %+v %v", st, err)
	}
}

// As an io.Writer, a WebSocket stream reports the whole write or an error.
func TestWebSocketConnWriteReportsAllOrAnError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan []byte, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := websocket.Upgrader{Subprotocols: []string{WebSocketProtocol}}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		b, _ := io.ReadAll(newWSConn(ws))
		got <- b
	}))
	defer hs.Close()
	c := newWSConn(wsDial(ctx, t, hs))
	if n, err := c.Write([]byte("AMQP")); n != 4 || err != nil {
		t.Fatalf("Write: %d, %v; want 4, nil", n, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Write([]byte("more")); err == nil {
		t.Fatalf("Write after Close: %d, nil; want an error", n)
	}
	if b := <-got; string(b) != "AMQP" {
		t.Fatalf("server read %q", b)
	}
}

// A plain HTTP request on the WebSocket path is told what to open instead.
func TestWebSocketPathWithoutUpgrade(t *testing.T) {
	_, hs := wsHub(t)
	resp, err := http.Get(hs.URL + WebSocketPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "subprotocol "+WebSocketProtocol) {
		t.Fatalf("GET %s: %d %q; want 400 naming the subprotocol", WebSocketPath, resp.StatusCode, b)
	}
}
