package broker_test

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/c2d-project/c2d/cloud/broker"
)

// Issue #17: the pre-authentication bounds hold on every MQTT transport: over WebSockets too, a
// CONNECT declared beyond MaxConnectSize ends the connection on its header, and
// MaxUnauthenticated counts WebSocket connections with TCP ones.
func TestPreAuthBoundsOverWebSockets(t *testing.T) {
	var mu sync.Mutex
	refused := map[string]int{}
	e := newEnv(t, envOpt{opts: func(o *broker.Options) {
		o.WSAddr = "127.0.0.1:0"
		o.MaxUnauthenticated = 2
		o.Events.Refused = func(reason string) { mu.Lock(); refused[reason]++; mu.Unlock() }
	}})
	wsURL := "ws://" + e.b.Addr(broker.ListenerWS) + broker.WebSocketPath
	dialWS := func() *websocket.Conn {
		t.Helper()
		ws, _, err := (&websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second}).Dial(wsURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		return ws
	}
	closed := func(ws *websocket.Conn) bool {
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, err := ws.ReadMessage()
		return err != nil && !strings.Contains(err.Error(), "timeout")
	}

	big := dialWS()
	defer big.Close()
	// CONNECT declaring 300,000 bytes (remaining length 0xe0 0xa7 0x12), then a few of them.
	if err := big.WriteMessage(websocket.BinaryMessage, []byte{0x10, 0xe0, 0xa7, 0x12, 0, 4, 'M', 'Q', 'T', 'T'}); err != nil {
		t.Fatal(err)
	}
	if !closed(big) {
		t.Fatal("a 300,000-byte CONNECT over WebSockets is still being read; want the connection closed")
	}
	eventually(t, "no connection counts as unauthenticated", func() bool { return e.b.Unauthenticated() == 0 })

	// Two silent connections (one TCP, one WebSocket) fill the cap; a third is closed at once.
	tcp, err := net.Dial("tcp", e.b.Addr(broker.ListenerMQTT))
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	ws := dialWS()
	defer ws.Close()
	eventually(t, "two unauthenticated connections", func() bool { return e.b.Unauthenticated() == 2 })
	third := dialWS()
	defer third.Close()
	if !closed(third) {
		t.Fatal("a third unauthenticated connection over the cap of 2 is still open")
	}
	mu.Lock()
	defer mu.Unlock()
	if refused[broker.RefusedConnectTooLarge] != 1 || refused[broker.RefusedUnauthenticatedLimit] != 1 {
		t.Errorf("Refused events %v, want one of each", refused)
	}
}
