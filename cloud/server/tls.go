package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Files of the generated TLS material, under DATA/tls.
const (
	CAFile        = "ca.pem"
	CAKeyFile     = "ca-key.pem"
	ServerFile    = "server.pem"
	ServerKeyFile = "server-key.pem"
)

const (
	caValidity     = 10 * 365 * 24 * time.Hour
	serverValidity = 397 * 24 * time.Hour // the longest lifetime browsers and most TLS stacks accept
	renewBefore    = 30 * 24 * time.Hour
)

// certSource serves the hub's certificate to every TLS listener and swaps it without a restart:
// a generated certificate is renewed before it expires, and a given cert/key pair is reloaded
// when its files change (certbot and friends replace them in place).
type certSource struct {
	mu      sync.Mutex
	cert    *tls.Certificate
	log     *slog.Logger
	checked time.Time
	reload  func() (*tls.Certificate, error) // nil: never reload
	stamp   func() string                    // what changes when a reload is due
	last    string
	// CAFile is the PEM file devices must trust; empty when the certificate was given.
	CAFile string
}

func (s *certSource) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reload != nil && time.Since(s.checked) > time.Minute {
		s.checked = time.Now()
		if st := s.stamp(); st != s.last {
			c, err := s.reload()
			if err != nil {
				s.log.Error("TLS certificate reload failed; keeping the old one", "err", err)
			} else {
				s.cert, s.last = c, st
				s.log.Info("TLS certificate reloaded")
			}
		}
	}
	return s.cert, nil
}

// aeadSuites are the TLS 1.2 cipher suites the hub offers: forward-secret ECDHE with AEAD ciphers
// only (no CBC, no RSA key exchange). TLS 1.3's suites are all AEAD and not configurable.
var aeadSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// TLSConfig is the server configuration shared by MQTTS, WSS and HTTPS.
func (s *certSource) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, CipherSuites: aeadSuites, GetCertificate: s.getCertificate}
}

// warnReadableKey logs when a private key file can be read by its group or others.
func warnReadableKey(path string, log *slog.Logger) {
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("tls.key_file is readable by group or others; make it private (chmod 600, owned by the hub's user)",
			"key_file", path, "mode", fmt.Sprintf("%04o", fi.Mode().Perm()))
	}
}

// loadTLS returns the certificate source for cfg: the given files, or the hub's own CA in
// DATA/tls with a server certificate for names and ips.
func loadTLS(cfg Config, names []string, ips []net.IP, log *slog.Logger) (*certSource, error) {
	if cfg.TLS.CertFile != "" {
		load := func() (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("tls: load cert_file %s / key_file %s: %w", cfg.TLS.CertFile, cfg.TLS.KeyFile, err)
			}
			return &c, nil
		}
		stamp := func() string { return fileStamp(cfg.TLS.CertFile) + fileStamp(cfg.TLS.KeyFile) }
		c, err := load()
		if err != nil {
			return nil, err
		}
		warnReadableKey(cfg.TLS.KeyFile, log)
		return &certSource{cert: c, log: log, reload: load, stamp: stamp, last: stamp(), checked: time.Now()}, nil
	}
	dir := filepath.Join(cfg.DataDir, "tls")
	gen := func() (*tls.Certificate, error) { return ensureGenerated(dir, names, ips, time.Now(), log) }
	c, err := gen()
	if err != nil {
		return nil, err
	}
	// A hub may run for longer than its certificate lives: re-check once a day.
	day := func() string { return time.Now().Format("2006-01-02") }
	return &certSource{cert: c, log: log, reload: gen, stamp: day, last: day(), checked: time.Now(),
		CAFile: filepath.Join(dir, CAFile)}, nil
}

func fileStamp(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "missing"
	}
	return fmt.Sprintf("%d/%d", fi.ModTime().UnixNano(), fi.Size())
}

// ensureGenerated makes sure dir holds a CA (created once, kept forever) and a server certificate
// signed by it for exactly names and ips that is valid for at least another 30 days; it
// regenerates the server certificate otherwise.
func ensureGenerated(dir string, names []string, ips []net.IP, now time.Time, log *slog.Logger) (*tls.Certificate, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	caCert, caKey, err := loadOrCreateCA(dir, now, log)
	if err != nil {
		return nil, err
	}
	certPath, keyPath := filepath.Join(dir, ServerFile), filepath.Join(dir, ServerKeyFile)
	if c, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
		leaf, why := c.Leaf, ""
		switch {
		case leaf == nil:
			why = "unreadable"
		case leaf.CheckSignatureFrom(caCert) != nil:
			why = "not signed by the current CA"
		case now.Add(renewBefore).After(leaf.NotAfter):
			why = fmt.Sprintf("expires %s", leaf.NotAfter.UTC().Format(time.DateOnly))
		case !sameNames(leaf, names, ips):
			why = fmt.Sprintf("names changed (%s → %s)", strings.Join(certNames(leaf.DNSNames, leaf.IPAddresses), ","),
				strings.Join(certNames(names, ips), ","))
		}
		if why == "" {
			return &c, nil
		}
		log.Info("regenerating the server certificate", "reason", why, "file", certPath)
	} else if !errors.Is(err, os.ErrNotExist) {
		log.Warn("server certificate unusable; regenerating", "file", certPath, "err", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("tls: server key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: names[0], Organization: []string{"c2d-hub"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(serverValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     names,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("tls: sign server certificate: %w", err)
	}
	keyPEM, err := keyToPEM(key)
	if err != nil {
		return nil, err
	}
	// The chain includes the CA so clients that only pin the CA still verify.
	certPEM := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Raw})...)
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	if err := writeFileAtomic(certPath, certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	log.Info("generated server certificate", "file", certPath, "names", strings.Join(certNames(names, ips), ","),
		"expires", tmpl.NotAfter.UTC().Format(time.DateOnly))
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return &c, nil
}

// loadOrCreateCA reads DATA/tls/ca.pem + ca-key.pem, or creates them (ECDSA P-256, 10 years).
func loadOrCreateCA(dir string, now time.Time, log *slog.Logger) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPath, keyPath := filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	certPEM, cerr := os.ReadFile(certPath)
	keyPEM, kerr := os.ReadFile(keyPath)
	if cerr == nil && kerr == nil {
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, nil, fmt.Errorf("tls: CA %s / %s: %w (move them away to generate a new CA; devices must then trust the new one)", certPath, keyPath, err)
		}
		key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
		if !ok {
			return nil, nil, fmt.Errorf("tls: CA key %s is not an ECDSA key", keyPath)
		}
		return pair.Leaf, key, nil
	}
	if !errors.Is(cerr, os.ErrNotExist) || !errors.Is(kerr, os.ErrNotExist) {
		// One of the two exists: never silently replace a CA that devices may trust.
		return nil, nil, fmt.Errorf("tls: CA incomplete in %s (ca.pem: %v; ca-key.pem: %v); restore both or remove both", dir, cerr, kerr)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: CA key: %w", err)
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "c2d-hub CA " + host, Organization: []string{"c2d-hub"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: create CA: %w", err)
	}
	kp, err := keyToPEM(key)
	if err != nil {
		return nil, nil, err
	}
	if err := writeFileAtomic(keyPath, kp, 0o600); err != nil {
		return nil, nil, fmt.Errorf("tls: %w", err)
	}
	if err := writeFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, nil, fmt.Errorf("tls: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: %w", err)
	}
	log.Info("generated a CA for the hub's TLS listeners; devices and clients must trust it", "file", certPath)
	return cert, key, nil
}

func keyToPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("tls: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

func certNames(names []string, ips []net.IP) []string {
	out := slices.Clone(names)
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func sameNames(c *x509.Certificate, names []string, ips []net.IP) bool {
	return slices.Equal(certNames(c.DNSNames, c.IPAddresses), certNames(names, ips))
}

// certSubjects is the set a generated server certificate must cover: the hub's host name,
// localhost, the loopback addresses, and the concrete IPs of the TLS listeners (for a listener on
// 0.0.0.0 or ::, every address of this machine's interfaces, so devices can also dial by IP).
func certSubjects(hostName string, tlsAddrs []string) ([]string, []net.IP) {
	names := []string{}
	var ips []net.IP
	addIP := func(ip net.IP) {
		if ip == nil || ip.IsUnspecified() || ip.IsLinkLocalUnicast() {
			return
		}
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		for _, x := range ips {
			if x.Equal(ip) {
				return
			}
		}
		ips = append(ips, ip)
	}
	if ip := net.ParseIP(hostName); ip != nil {
		addIP(ip)
	} else {
		names = append(names, hostName)
	}
	if hostName != "localhost" {
		names = append(names, "localhost")
	}
	addIP(net.IPv4(127, 0, 0, 1))
	addIP(net.IPv6loopback)
	wild := false
	for _, a := range tlsAddrs {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		ip := net.ParseIP(host)
		switch {
		case host == "" || (ip != nil && ip.IsUnspecified()):
			wild = true
		case ip != nil:
			addIP(ip)
		case !slices.Contains(names, strings.ToLower(host)):
			names = append(names, strings.ToLower(host))
		}
	}
	if wild {
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok {
					addIP(n.IP)
				}
			}
		}
	}
	if len(names) == 0 {
		names = append(names, "localhost")
	}
	return names, ips
}

// writeFileAtomic writes data to path through a synced temporary file and a rename, then syncs the
// directory, so a crash leaves either the old file or the new one.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
