package server

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"strings"
	"time"
)

// checkDebugAddr refuses a debug listener that is not on loopback: net/http/pprof has no
// authentication and its heap and goroutine dumps show the hub's memory (SAS keys, message
// bodies), so it must never be reachable from another machine. Reach it from elsewhere through an
// SSH tunnel (ssh -L 6060:127.0.0.1:6060 hub).
func checkDebugAddr(addr string) error {
	if err := checkAddr(addr); err != nil || !enabled(addr) {
		return err
	}
	host, _, _ := net.SplitHostPort(addr)
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	what := "all interfaces"
	if host != "" {
		what = host
	}
	return fmt.Errorf("%q listens on %s: the profiling endpoint has no authentication and shows the hub's memory, so it only listens on loopback (127.0.0.1:6060, [::1]:6060 or localhost:6060; reach it from elsewhere through an SSH tunnel)", addr, what)
}

// debugHandler serves net/http/pprof's pages under /debug/pprof/ on a mux of its own (never
// http.DefaultServeMux, which the API does not use either).
func debugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// serveDebug binds the loopback profiling listener (listen.debug, --debug-listen) and returns the
// bound address. It is not part of /healthz: a failing debug listener is logged, never a reason
// to stop serving devices.
func (s *Server) serveDebug(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	// Sample one contended lock in 10 for /debug/pprof/mutex (off, the profile is empty); the
	// cost is a few nanoseconds on a contended unlock only, and only while profiling is opted in.
	runtime.SetMutexProfileFraction(10)
	s.debug = &http.Server{
		Handler:           debugHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		// No WriteTimeout: a CPU profile or trace streams for as long as ?seconds= asks, and
		// pprof refuses durations past the server's write timeout.
		IdleTimeout: 2 * time.Minute,
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.debug.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Warn("debug listener stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return ln.Addr().String(), nil
}
