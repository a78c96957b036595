package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// Resolved is what the agent connects with, read from the files the config names.
type Resolved struct {
	Device    iothub.DeviceConnectionString
	BrokerURL *url.URL
	// Fallbacks are connection.broker_url's further entries, tried in order after BrokerURL.
	Fallbacks []*url.URL
	// Extension: the agent opts in to c2d's disposition extension (c2d-ext=dispositions).
	Extension bool
	// TLS is set for ssl:// and wss:// brokers: the CA file's roots, or the system's.
	TLS      *tls.Config
	StateDir string
	// Warnings are worth a log line but not a refusal to start (a world-readable secret file).
	Warnings []string
}

// azureHostSuffixes are the public and sovereign clouds' IoT Hub domains.
var azureHostSuffixes = []string{".azure-devices.net", ".azure-devices.cn", ".azure-devices.us", ".azure-devices.de"}

// IsAzureHost reports whether host is an Azure IoT Hub (which does not speak c2d's extension).
func IsAzureHost(host string) bool {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	for _, s := range azureHostSuffixes {
		if strings.HasSuffix(h, s) {
			return true
		}
	}
	return false
}

// Resolve reads the connection string (file), the CA file and the state directory. Call it after
// Load; errors name the config field.
func (c *Config) Resolve() (*Resolved, error) {
	r := &Resolved{}
	cn := &c.Connection
	raw := cn.ConnectionString
	field := "connection.connection_string"
	if cn.ConnectionStringFile != "" {
		field = "connection.connection_string_file"
		data, err := os.ReadFile(cn.ConnectionStringFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		// 0600 (agent's user) and 0640 (root-owned, agent's group: how the package installs it) are
		// both fine; anything others can reach, or the group can rewrite, is not.
		if fi, err := os.Stat(cn.ConnectionStringFile); err == nil && fi.Mode().Perm()&0o027 != 0 {
			r.Warnings = append(r.Warnings, fmt.Sprintf("%s: %s is accessible to others or writable by its group (mode %04o): it holds the device key; chmod 600 (or 640 with the agent's group)",
				field, cn.ConnectionStringFile, fi.Mode().Perm()))
		}
		raw = strings.TrimSpace(string(data))
	} else if c.Path != "" {
		// An inline key is as secret as the file holding it (issue #17): the same rule.
		if fi, err := os.Stat(c.Path); err == nil && fi.Mode().Perm()&0o027 != 0 {
			r.Warnings = append(r.Warnings, fmt.Sprintf("%s: the device key is inline in %s, which is accessible to others or writable by its group (mode %04o); move it to connection_string_file (chmod 600), or chmod 600 (or 640 with the agent's group) the config",
				field, c.Path, fi.Mode().Perm()))
		}
	}
	dev, err := parseDevice(raw)
	if err != nil {
		if cn.ConnectionStringFile != "" {
			return nil, fmt.Errorf("%s: %s: %w", field, cn.ConnectionStringFile, err)
		}
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	r.Device = dev
	if dev.SharedAccessSignature != "" {
		r.Warnings = append(r.Warnings, field+": uses a fixed SharedAccessSignature; the agent cannot renew it and stops connecting once it expires")
	}

	if len(cn.BrokerURL) > 0 {
		for i, s := range cn.BrokerURL {
			u, err := parseBrokerURL(s)
			if err != nil {
				return nil, fmt.Errorf("connection.broker_url[%d]: %w", i, err)
			}
			if i == 0 {
				r.BrokerURL = u
			} else {
				r.Fallbacks = append(r.Fallbacks, u)
			}
		}
	} else {
		host := dev.HostName
		if dev.GatewayHostName != "" {
			host = dev.GatewayHostName
		}
		r.BrokerURL = &url.URL{Scheme: "ssl", Host: net.JoinHostPort(host, "8883")}
	}

	usesTLS := false
	for _, u := range append([]*url.URL{r.BrokerURL}, r.Fallbacks...) {
		usesTLS = usesTLS || u.Scheme == "ssl" || u.Scheme == "wss"
	}
	if usesTLS {
		r.TLS = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: r.BrokerURL.Hostname()}
		if cn.CAFile != "" {
			pem, err := os.ReadFile(cn.CAFile)
			if err != nil {
				return nil, fmt.Errorf("connection.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("connection.ca_file: no PEM certificates in %s", cn.CAFile)
			}
			r.TLS.RootCAs = pool
		}
	} else if cn.CAFile != "" {
		r.Warnings = append(r.Warnings, "connection.ca_file: ignored: broker_url "+r.BrokerURL.Redacted()+" does not use TLS")
	}

	switch cn.Dispositions {
	case DispositionsExtension:
		r.Extension = true
	case DispositionsAzure:
		r.Extension = false
	default:
		r.Extension = !IsAzureHost(dev.HostName)
	}

	r.StateDir = c.StateDir
	if r.StateDir == "" {
		// systemd's StateDirectory= sets $STATE_DIRECTORY (a colon-separated list when several).
		if sd := os.Getenv("STATE_DIRECTORY"); sd != "" {
			r.StateDir = strings.Split(sd, ":")[0]
		} else {
			r.StateDir = DefaultStateDir
		}
	}
	return r, nil
}

func parseDevice(s string) (iothub.DeviceConnectionString, error) {
	dev, err := iothub.ParseDeviceConnectionString(s)
	if err != nil {
		return dev, err
	}
	if dev.X509 {
		return dev, errors.New("x509=true: X.509 client certificates are not supported yet; use a SharedAccessKey")
	}
	if dev.SharedAccessKey == "" && dev.SharedAccessSignature == "" {
		return dev, errors.New("needs SharedAccessKey (or SharedAccessSignature)")
	}
	return dev, nil
}

func parseBrokerURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL", s)
	}
	switch u.Scheme {
	case "tcp", "ssl", "ws", "wss":
	default:
		return nil, fmt.Errorf("scheme %q not supported (use tcp://, ssl://, ws:// or wss://)", u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("%q has no host", s)
	}
	if (u.Scheme == "tcp" || u.Scheme == "ssl") && u.Port() == "" {
		return nil, fmt.Errorf("%q has no port (e.g. %s://%s:8883)", s, u.Scheme, u.Hostname())
	}
	return u, nil
}
