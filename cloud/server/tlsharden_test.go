package server

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Issue #17: TLS 1.2 offers AEAD suites only; a client that offers only CBC cannot connect.
func TestTLS12AEADOnly(t *testing.T) {
	names, ips := certSubjects("aead.example", nil)
	cfg := Default()
	cfg.DataDir = t.TempDir()
	src, err := loadTLS(cfg, names, ips, quiet)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", src.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	dial := func(suite uint16) error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), &tls.Config{
			InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{suite}})
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA); err == nil {
		t.Error("a TLS 1.2 client offering only ECDHE-ECDSA-AES128-CBC-SHA connected")
	}
	if err := dial(tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256); err != nil {
		t.Errorf("TLS 1.2 with AES-128-GCM: %v", err)
	}
}

// Issue #17: a given tls.key_file readable by group or others is warned about at start.
func TestReadableTLSKeyWarned(t *testing.T) {
	dir := t.TempDir()
	names, ips := certSubjects("key.example", nil)
	gen := filepath.Join(dir, "gen")
	if _, err := ensureGenerated(gen, names, ips, time.Now(), quiet); err != nil {
		t.Fatal(err)
	}
	cfg := Default()
	cfg.TLS = TLSFiles{CertFile: filepath.Join(gen, ServerFile), KeyFile: filepath.Join(gen, ServerKeyFile)}
	for mode, warned := range map[os.FileMode]bool{0o600: false, 0o640: true, 0o644: true} {
		if err := os.Chmod(cfg.TLS.KeyFile, mode); err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		if _, err := loadTLS(cfg, nil, nil, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(logs.String(), "readable by group or others"); got != warned {
			t.Errorf("key mode %04o: warned %v, want %v\n%s", mode, got, warned, &logs)
		}
	}
}
