package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Issue #17: mochi allocates a packet's declared length before reading it, and before CONNECT is
// authenticated anyone may send one: 3,000 connections each sending 326,999 bytes of a
// 327,000-byte CONNECT took the hub from 0.31 to 1.16 GB. So, before authentication, the broker
// bounds the CONNECT packet (MaxConnectSize: a real one is a client id, a username and a SAS
// token) and the number of connections that have not yet sent a whole CONNECT
// (Options.MaxUnauthenticated); the pre-CONNECT timeout (ConnectTimeout) still applies to each.

// MaxConnectSize is the largest CONNECT packet the broker reads from a client not yet
// authenticated. Azure's CONNECT is well under 2 KB (a 128-character client id, a username with
// the SDK's parameters, a SAS token); a will message, which c2d drops anyway, must fit too.
const MaxConnectSize = 16 << 10

// DefaultMaxUnauthenticated is Options.MaxUnauthenticated's default: far above what a fleet
// reconnecting after a restart needs at once (each CONNECT is read within milliseconds), and with
// MaxConnectSize it bounds what strangers can make the hub hold to 16 MB.
const DefaultMaxUnauthenticated = 1024

// Reasons given to Events.Refused.
const (
	RefusedUnauthenticatedLimit = "unauthenticated_limit" // too many connections without CONNECT
	RefusedConnectTooLarge      = "connect_too_large"     // CONNECT beyond MaxConnectSize
)

var errConnectTooLarge = errors.New("CONNECT packet too large")

// preAuth counts the connections that have not sent their whole CONNECT yet.
type preAuth struct {
	max      int
	pending  atomic.Int64
	log      *slog.Logger
	onRefuse func(reason string)

	mu       sync.Mutex
	loggedAt time.Time
	dropped  int // refusals since the last log line
}

// Unauthenticated returns the number of connections that have not sent their whole CONNECT yet.
func (b *Broker) Unauthenticated() int { return int(b.pre.pending.Load()) }

// admit gates c, or refuses it (the caller closes it) when MaxUnauthenticated connections are
// already waiting for their CONNECT.
func (p *preAuth) admit(c net.Conn) (net.Conn, bool) {
	if p.pending.Add(1) > int64(p.max) {
		p.pending.Add(-1)
		p.refused(RefusedUnauthenticatedLimit, c.RemoteAddr())
		return nil, false
	}
	return &connectGate{Conn: c, p: p}, true
}

func (p *preAuth) refused(reason string, remote net.Addr) {
	if p.onRefuse != nil {
		p.onRefuse(reason)
	}
	p.mu.Lock()
	p.dropped++
	now := time.Now()
	if now.Sub(p.loggedAt) < 10*time.Second {
		p.mu.Unlock()
		return
	}
	n := p.dropped
	p.loggedAt, p.dropped = now, 0
	p.mu.Unlock()
	switch reason {
	case RefusedUnauthenticatedLimit:
		p.log.Warn("too many connections without CONNECT; closing new ones (auth.max_unauthenticated)",
			"limit", p.max, "refused", n, "remote", remote.String())
	default:
		p.log.Warn("CONNECT too large; closing the connection", "limit_bytes", MaxConnectSize, "refused", n, "remote", remote.String())
	}
}

// connectGate reads the first packet's fixed header as it passes to mochi: a CONNECT declared
// larger than MaxConnectSize ends the connection before mochi allocates it, and once the whole
// first packet went through the connection stops counting as unauthenticated.
type connectGate struct {
	net.Conn
	p    *preAuth
	once sync.Once

	done   bool
	header int // fixed-header bytes seen (type byte + remaining-length bytes)
	remain int // declared remaining length
	mult   int
	body   int // body bytes seen
}

func (g *connectGate) release() { g.once.Do(func() { g.p.pending.Add(-1) }) }

func (g *connectGate) Read(b []byte) (int, error) {
	n, err := g.Conn.Read(b)
	if g.done || n == 0 {
		return n, err
	}
	for i := 0; i < n && !g.done; i++ {
		c := b[i]
		switch {
		case g.header == 0:
			g.header, g.mult = 1, 1
			if c>>4 != 1 { // not CONNECT: mochi refuses it; nothing more to bound here
				g.finish()
			}
		case g.header <= 4 && g.mult > 0:
			g.header++
			g.remain += int(c&0x7f) * g.mult
			if g.remain > MaxConnectSize {
				g.p.refused(RefusedConnectTooLarge, g.RemoteAddr())
				g.finish()
				return 0, fmt.Errorf("%w: declares %d bytes or more (limit %d)", errConnectTooLarge, g.remain, MaxConnectSize)
			}
			if c&0x80 == 0 {
				g.mult = 0 // remaining length complete
				if g.remain == 0 {
					g.finish()
				}
			} else {
				g.mult *= 128
			}
		default:
			// Body bytes: the rest of this read counts at once.
			g.body += n - i
			if g.body >= g.remain {
				g.finish()
			}
			i = n
		}
	}
	return n, err
}

func (g *connectGate) finish() {
	g.done = true
	g.release()
}

func (g *connectGate) Close() error {
	g.release()
	return g.Conn.Close()
}
