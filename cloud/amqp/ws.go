package amqp

import (
	"io"
	"net"
	"time"

	"github.com/gorilla/websocket"
)

// wsConn is a WebSocket as a byte stream: AMQP frames may span or share binary messages.
type wsConn struct {
	ws *websocket.Conn
	r  io.Reader
}

func newWSConn(ws *websocket.Conn) *wsConn { return &wsConn{ws: ws} }

// WebSocketConn wraps a WebSocket (subprotocol AMQPWSB10) as the byte stream AMQP runs on: the
// server's side of it, and the client's side for Go clients such as go-amqp's NewConn.
func WebSocketConn(ws *websocket.Conn) net.Conn { return newWSConn(ws) }

func (w *wsConn) Read(p []byte) (int, error) {
	for {
		if w.r == nil {
			typ, r, err := w.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				continue // AMQPWSB10 carries binary messages only
			}
			w.r = r
		}
		n, err := w.r.Read(p)
		if err == io.EOF {
			w.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (w *wsConn) Write(p []byte) (int, error) {
	if err := w.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *wsConn) Close() error                       { return w.ws.Close() }
func (w *wsConn) LocalAddr() net.Addr                { return w.ws.LocalAddr() }
func (w *wsConn) RemoteAddr() net.Addr               { return w.ws.RemoteAddr() }
func (w *wsConn) SetDeadline(t time.Time) error      { return w.ws.NetConn().SetDeadline(t) }
func (w *wsConn) SetReadDeadline(t time.Time) error  { return w.ws.SetReadDeadline(t) }
func (w *wsConn) SetWriteDeadline(t time.Time) error { return w.ws.SetWriteDeadline(t) }
