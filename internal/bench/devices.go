package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/c2d-project/c2d/cloud/apiclient"
	"github.com/c2d-project/c2d/cloud/iothub"
)

// NewKey returns a random base64 SAS key.
func NewKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// RegisterDevices creates ids (all with key) using conc concurrent requests.
func RegisterDevices(ctx context.Context, c *apiclient.Client, ids []string, key string, conc int) error {
	return parallel(ctx, len(ids), conc, func(i int) error {
		_, err := c.CreateDevice(ctx, ids[i], key, key)
		if err != nil {
			return fmt.Errorf("create device %s: %w", ids[i], err)
		}
		return nil
	})
}

// parallel runs f(0..n-1) on conc goroutines and returns the first error.
func parallel(ctx context.Context, n, conc int, f func(i int) error) error {
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n))
					return
				}
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return first
}

// DeviceOptions are how a lightweight simulated device connects to a c2d hub.
type DeviceOptions struct {
	Addr, DeviceID, Key string
	// OnMessage runs for every delivery (on the reader goroutine), before the PUBACK that completes
	// the message (the device does not opt in to the disposition extension).
	OnMessage func(deviceID string, m *iothub.Message)
	KeepAlive time.Duration // default 20 minutes: idle fleets must not need pings during a run
}

// DialDevice connects a lightweight device (CleanSession=0, Azure username and SAS token) and
// subscribes to its device-bound topic.
func DialDevice(o DeviceOptions) (*LiteClient, error) {
	if o.KeepAlive == 0 {
		o.KeepAlive = 20 * time.Minute
	}
	cs := iothub.DeviceConnectionString{HostName: HostName, DeviceID: o.DeviceID, SharedAccessKey: o.Key}
	tok, err := cs.Token(time.Now(), time.Hour)
	if err != nil {
		return nil, err
	}
	c, err := DialLite(o.Addr, LiteOptions{
		ClientID: o.DeviceID, Username: iothub.FormatUsername(HostName, o.DeviceID, "", nil), Password: tok,
		KeepAlive: o.KeepAlive,
		OnMessage: func(topic string, payload []byte) {
			if o.OnMessage == nil {
				return
			}
			_, m, err := iothub.ParseDeviceBoundTopic(topic)
			if err != nil {
				return
			}
			m.Body = payload
			o.OnMessage(o.DeviceID, m)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", o.DeviceID, err)
	}
	if err := c.Subscribe(iothub.DeviceBoundFilter(o.DeviceID), 1, 30*time.Second); err != nil {
		c.Abort()
		return nil, fmt.Errorf("device %s: %w", o.DeviceID, err)
	}
	return c, nil
}

// DialDevices connects n devices with conc concurrent connects; it returns the clients in order.
func DialDevices(ctx context.Context, addr string, ids []string, key string, conc int, onMessage func(string, *iothub.Message)) ([]*LiteClient, error) {
	out := make([]*LiteClient, len(ids))
	err := parallel(ctx, len(ids), conc, func(i int) error {
		c, err := DialDevice(DeviceOptions{Addr: addr, DeviceID: ids[i], Key: key, OnMessage: onMessage})
		out[i] = c
		return err
	})
	if err != nil {
		CloseAll(out)
		return nil, err
	}
	return out, nil
}

// CloseAll disconnects every non-nil client.
func CloseAll(cs []*LiteClient) {
	var wg sync.WaitGroup
	for _, c := range cs {
		if c != nil {
			wg.Add(1)
			go func() { defer wg.Done(); c.Close() }()
		}
	}
	wg.Wait()
}

// ServeRawBroker runs a plain mochi-mqtt server (the version the hub embeds, no hooks but allow-all
// auth, no persistence) on addr until ctx ends: the "queue logic bypassed" baseline. ready gets the
// bound address.
func ServeRawBroker(ctx context.Context, addr string, ready func(string)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	bound := ln.Addr().String()
	ln.Close()
	opts := &mqtt.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))}
	s := mqtt.New(opts)
	if err := s.AddHook(new(allowHook), nil); err != nil {
		return err
	}
	if err := s.AddListener(listeners.NewTCP(listeners.Config{ID: "raw", Address: bound})); err != nil {
		return err
	}
	if err := s.Serve(); err != nil {
		return err
	}
	ready(bound)
	<-ctx.Done()
	return s.Close()
}

// StartRawBrokerProc starts `self raw-broker` (the bench binary re-executed) and returns its address.
func StartRawBrokerProc(self, logPath string) (*Proc, string, error) {
	addr, err := FreeAddr()
	if err != nil {
		return nil, "", err
	}
	p, err := StartProc(self, []string{"raw-broker", "--addr", addr}, nil, logPath)
	if err != nil {
		return nil, "", err
	}
	if err := waitListening(addr, p.Exited, 20*time.Second); err != nil {
		p.Kill()
		return nil, "", fmt.Errorf("raw broker: %w (log %s)", err, logPath)
	}
	return p, addr, nil
}

// ErrNoMosquitto says the mosquitto binary is not installed.
var ErrNoMosquitto = errors.New("mosquitto not installed (apt-get install mosquitto)")

// StartMosquitto runs Debian's mosquitto on a free loopback port with TCP_NODELAY (its default
// leaves Nagle on, adding ~40 ms per request/reply on loopback) and anonymous access.
func StartMosquitto(dir string) (*Proc, string, error) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/mosquitto"); serr != nil {
			return nil, "", ErrNoMosquitto
		}
		bin = "/usr/sbin/mosquitto"
	}
	addr, err := FreeAddr()
	if err != nil {
		return nil, "", err
	}
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(dir, "mosquitto.conf")
	body := strings.Join([]string{
		"listener " + port + " 127.0.0.1",
		"allow_anonymous true",
		"set_tcp_nodelay true",
		"persistence false",
		"max_queued_messages 1000000",
		"max_inflight_messages 0",
		"log_dest stderr",
		"log_type error",
		"log_type warning",
		"",
	}, "\n")
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		return nil, "", err
	}
	p, err := StartProc(bin, []string{"-c", conf}, nil, filepath.Join(dir, "mosquitto.log"))
	if err != nil {
		return nil, "", err
	}
	if err := waitListening(addr, p.Exited, 20*time.Second); err != nil {
		p.Kill()
		return nil, "", fmt.Errorf("mosquitto: %w (log %s)", err, filepath.Join(dir, "mosquitto.log"))
	}
	return p, addr, nil
}

func waitListening(addr string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return errors.New("exited during start-up")
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on %s after %s", addr, timeout)
		}
	}
}

// allowHook lets every client connect and publish/subscribe anywhere (mochi's auth.AllowHook,
// without that package's YAML dependency).
type allowHook struct{ mqtt.HookBase }

func (h *allowHook) ID() string { return "allow-all" }

func (h *allowHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (h *allowHook) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

func (h *allowHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }
