package conn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// clockFloor is a date every correctly set clock is past: a board that boots without network and
// RTC (a Pi) starts in 1970 or at its last shutdown, and signs tokens the hub sees as long expired.
var clockFloor = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// peerCert remembers what the hub's TLS certificate of the last handshake said, so an
// authentication failure can be checked against it locally (MQTT 3.1.1's CONNACK carries only a
// return code, never the hub's reason).
type peerCert struct {
	mu        sync.Mutex
	names     []string
	notBefore time.Time
}

func (p *peerCert) wrap(cfg *tls.Config) *tls.Config {
	c := cfg.Clone()
	next := c.VerifyConnection
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) > 0 {
			leaf := cs.PeerCertificates[0]
			p.mu.Lock()
			p.names = append(append([]string(nil), leaf.DNSNames...), ipStrings(leaf.IPAddresses)...)
			p.notBefore = leaf.NotBefore
			p.mu.Unlock()
		}
		if next != nil {
			return next(cs)
		}
		return nil
	}
	return c
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}

func (p *peerCert) get() ([]string, time.Time) {
	if p == nil {
		return nil, time.Time{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.names, p.notBefore
}

// Hint says, for a failed connection attempt, the likely cause and the command that checks or
// fixes it. The hub's reason stays in the hub's log: over MQTT 3.1.1 it can only answer "bad user
// name or password" (4: the key, the token's expiry or the host name it was signed for) or "not
// authorized" (5: c2d-hub's answer for a disabled device whose token verifies; an unknown device
// gets 4, so ids cannot be enumerated), so the agent checks what it
// can see locally — its clock and the hub's certificate — to tell those apart.
func Hint(err error, dev iothub.DeviceConnectionString, broker string, now time.Time, certNames []string, certNotBefore time.Time) string {
	id := dev.DeviceID
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	var dns *net.DNSError
	switch {
	case errors.As(err, &ua):
		return "the hub's TLS certificate is not signed by a CA the board trusts: copy the hub's DATA/tls/ca.pem to the board (/etc/c2d/hub-ca.pem) and set connection.ca_file to it"
	case errors.As(err, &hn):
		return fmt.Sprintf("the hub's certificate does not cover the name the board dialled (%s): connect by a name it covers (%s) in the connection string's HostName or connection.broker_url, or set the hub's hostname: and restart it",
			broker, strings.Join(hn.Certificate.DNSNames, ", "))
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return fmt.Sprintf("the hub's certificate is not valid at the board's time %s: if that time is wrong, fix the clock (timedatectl; sudo systemctl enable systemd-time-wait-sync)", now.UTC().Format(time.RFC3339))
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("nothing accepts connections at %s: is c2d-hub running and listening there (`c2d hub status`), and is the port right (connection.broker_url)?", broker)
	case errors.As(err, &dns):
		return fmt.Sprintf("the board cannot resolve %q: check the connection string's HostName / connection.broker_url and the board's DNS (`getent hosts %s`)", dns.Name, dns.Name)
	case errors.Is(err, packets.ErrorRefusedNotAuthorised):
		return fmt.Sprintf("the hub knows device %q but it is disabled (operator: `c2d device show %s`; `c2d device enable %s`)", id, id, id)
	case errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword):
		if now.Before(clockFloor) || (!certNotBefore.IsZero() && now.Before(certNotBefore)) {
			return fmt.Sprintf("the board's clock says %s, which is before the hub's certificate was issued: tokens it signs look expired; sync the clock (timedatectl; sudo systemctl enable systemd-time-wait-sync)", now.UTC().Format(time.RFC3339))
		}
		if len(certNames) > 0 && !coversName(certNames, dev.HostName) {
			return fmt.Sprintf("the connection string is for HostName=%s, but the hub's certificate names %s: the hub's hostname: probably changed, which invalidates connection strings issued before; get a new one (operator: `c2d device connection-string %s`)",
				dev.HostName, strings.Join(certNames, ", "), id)
		}
		return fmt.Sprintf("the hub refused the device's key or token: the device is not registered, its key was renewed, or HostName=%s is not the hub's hostname; get a current connection string (operator: `c2d device show %s`; `c2d device connection-string %s`), and check the board's clock (timedatectl)", dev.HostName, id, id)
	}
	return ""
}

func coversName(names []string, host string) bool {
	for _, n := range names {
		if strings.EqualFold(n, host) {
			return true
		}
		if strings.HasPrefix(n, "*.") {
			if i := strings.IndexByte(host, '.'); i > 0 && strings.EqualFold(n[1:], host[i:]) {
				return true
			}
		}
	}
	return false
}

// Hint is the package-level Hint for this client's device, broker and the hub's certificate as
// last seen.
func (c *Client) Hint(err error) string {
	names, nb := c.peer.get()
	return Hint(err, c.opts.Device, c.opts.BrokerURL.Host, time.Now(), names, nb)
}

// Probe makes one connection attempt with the client's credentials and TLS settings and
// disconnects (check-config --connect). It connects with a clean session and subscribes to
// nothing, so the hub delivers it no message and a later agent connection re-subscribes as always.
func (c *Client) Probe(ctx context.Context) error {
	c.probe = true
	defer func() { c.probe = false }()
	g := c.newGeneration()
	defer c.endGeneration()
	tok := g.client.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return err
	}
	g.client.Disconnect(250)
	return nil
}
