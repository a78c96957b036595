package server

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/c2d-project/c2d/cloud/methods"
)

// joinCluster advertises this node's service API in its nodes row and lets direct methods for
// devices held by other nodes go there (docs/cluster.md, "Routing direct methods"); desired
// changes other nodes relay reach the boards connected here. A no-op on a hub with its own store.
func (s *Server) joinCluster(ctx context.Context) error {
	if s.hub.Node() == "" {
		return nil
	}
	if s.broker != nil {
		// Desired changes made on another node for boards connected here.
		s.hub.OnDesiredChange(func(id string, version int64, patch []byte) {
			if patch != nil {
				s.twins.DesiredChanged(context.Background(), id, version, patch) // does not block
				return
			}
			go s.twins.DesiredChanged(context.Background(), id, version, nil) // reads the store
		})
	}
	api := s.cfg.APIURL
	if api == "" {
		api = advertisedURL(s.ep, s.cfg.HostName)
	}
	if api == "" {
		s.log.Warn("cluster: no HTTP or HTTPS listener, so the other nodes cannot pass direct methods to the boards connected here")
		return nil
	}
	if err := s.hub.AdvertiseAPI(ctx, api, s.cfg.HostName); err != nil {
		return err
	}
	if s.methods == nil {
		return nil
	}
	roots, err := clusterRoots(s.cfg.DataDir)
	if err != nil {
		return err
	}
	s.methods.SetForwarder(methods.NewForwarder(s.hub, roots, s.log.With("component", "methods")))
	s.log.Info("cluster: this node's service API is advertised to the others", "node", s.hub.Node(), "api_url", api)
	return nil
}

// advertisedURL is the HTTPS listener's URL, else the HTTP one's; a listener on every address is
// named by the hub's host name (which its certificate carries).
func advertisedURL(ep Endpoints, hostName string) string {
	scheme, addr := "https", ep.HTTPS
	if addr == "" {
		scheme, addr = "http", ep.HTTP
	}
	if addr == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = hostName
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// clusterRoots is the CA the nodes' HTTPS certificates are checked against: the cluster's one CA
// in DATA/tls/ca.pem (docs/cluster.md, "one CA"), else the system's roots (certificates from
// tls.cert_file signed by a public or company CA the system trusts).
func clusterRoots(dataDir string) (*x509.CertPool, error) {
	path := filepath.Join(dataDir, "tls", CAFile)
	pem, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cluster CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("cluster CA %s: no PEM certificate in it", path)
	}
	return pool, nil
}
