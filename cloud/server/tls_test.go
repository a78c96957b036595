package server

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

var quiet = slog.New(slog.DiscardHandler)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(path, filepath.Join(filepath.Dir(path), map[string]string{CAFile: CAKeyFile, ServerFile: ServerKeyFile}[filepath.Base(path)]))
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf
}

func TestGeneratedTLS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	now := time.Now()
	names, ips := certSubjects("hub.example", []string{"127.0.0.2:8883", "127.0.0.1:0"})
	if !slices.Contains(names, "hub.example") || !slices.Contains(names, "localhost") {
		t.Fatalf("names %v", names)
	}
	c1, err := ensureGenerated(dir, names, ips, now, quiet)
	if err != nil {
		t.Fatal(err)
	}
	ca := readCert(t, filepath.Join(dir, CAFile))
	if !ca.IsCA || ca.NotAfter.Sub(now) < 9*365*24*time.Hour {
		t.Fatalf("CA: IsCA=%v NotAfter=%v", ca.IsCA, ca.NotAfter)
	}
	for _, f := range []string{CAKeyFile, ServerKeyFile} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v, %v; want 0600", f, fi.Mode(), err)
		}
	}
	// The server certificate verifies against the CA for every name and IP, not for others.
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	leaf := c1.Leaf
	for _, host := range []string{"hub.example", "localhost", "127.0.0.1", "::1", "127.0.0.2"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
			t.Errorf("verify for %s: %v", host, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "other.example"}); err == nil {
		t.Error("certificate verifies for other.example")
	}

	// Same names: the same certificate is reused.
	c2, err := ensureGenerated(dir, names, ips, now, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if !c2.Leaf.Equal(c1.Leaf) {
		t.Fatal("server certificate regenerated without reason")
	}
	// New host name: a new server certificate from the same CA.
	names3, ips3 := certSubjects("hub2.example", []string{"127.0.0.1:0"})
	c3, err := ensureGenerated(dir, names3, ips3, now, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if c3.Leaf.Equal(c1.Leaf) || !slices.Contains(c3.Leaf.DNSNames, "hub2.example") {
		t.Fatalf("names changed but certificate kept: %v", c3.Leaf.DNSNames)
	}
	if err := c3.Leaf.CheckSignatureFrom(ca); err != nil {
		t.Fatalf("new server certificate not from the kept CA: %v", err)
	}
	if !readCert(t, filepath.Join(dir, CAFile)).Equal(ca) {
		t.Fatal("CA changed")
	}
	// Close to expiry: renewed.
	later := c3.Leaf.NotAfter.Add(-10 * 24 * time.Hour)
	c4, err := ensureGenerated(dir, names3, ips3, later, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if !c4.Leaf.NotAfter.After(c3.Leaf.NotAfter) {
		t.Fatalf("not renewed: %v vs %v", c4.Leaf.NotAfter, c3.Leaf.NotAfter)
	}
}

func TestIncompleteCAIsAnError(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	names, ips := certSubjects("h", nil)
	if _, err := ensureGenerated(dir, names, ips, time.Now(), quiet); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := ensureGenerated(dir, names, ips, time.Now(), quiet); err == nil {
		t.Fatal("a CA without its key was silently replaced")
	}
}

func TestWildcardListenAddsInterfaceIPs(t *testing.T) {
	_, ips := certSubjects("h", []string{"0.0.0.0:8883"})
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Skip(err)
	}
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || n.IP.IsLinkLocalUnicast() {
			continue
		}
		if !slices.ContainsFunc(ips, n.IP.Equal) {
			t.Errorf("interface address %v missing from %v", n.IP, ips)
		}
	}
}

func TestGivenCertificateReloads(t *testing.T) {
	dir := t.TempDir()
	// Make a pair with the generator, then serve it as "given" files.
	names, ips := certSubjects("given.example", nil)
	gen := filepath.Join(dir, "gen")
	if _, err := ensureGenerated(gen, names, ips, time.Now(), quiet); err != nil {
		t.Fatal(err)
	}
	cfg := Default()
	cfg.TLS = TLSFiles{CertFile: filepath.Join(gen, ServerFile), KeyFile: filepath.Join(gen, ServerKeyFile)}
	src, err := loadTLS(cfg, nil, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if src.CAFile != "" {
		t.Fatalf("CAFile %q for a given certificate", src.CAFile)
	}
	first, _ := src.getCertificate(nil)
	// Replace the files (new names) and let the check interval pass.
	names2, _ := certSubjects("renewed.example", nil)
	if _, err := ensureGenerated(gen, names2, ips, time.Now(), quiet); err != nil {
		t.Fatal(err)
	}
	src.checked = time.Time{}
	second, _ := src.getCertificate(nil)
	if second.Leaf.Equal(first.Leaf) || !slices.Contains(second.Leaf.DNSNames, "renewed.example") {
		t.Fatalf("given certificate not reloaded: %v", second.Leaf.DNSNames)
	}
	cfg.TLS.KeyFile = filepath.Join(dir, "nope.pem")
	if _, err := loadTLS(cfg, nil, nil, quiet); err == nil {
		t.Fatal("missing key file accepted")
	}
}
