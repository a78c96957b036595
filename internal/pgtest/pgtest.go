// Package pgtest starts a real PostgreSQL server from Debian's package for tests: initdb into a
// temporary directory (as the postgres user when running as root: initdb refuses root), pg_ctl
// start on a free loopback port with its socket in that directory, fsync on (durability tests
// mean something), and a fresh database per test. Not pg_virtualenv: it runs with fsync=off.
//
// Outside CI a machine without PostgreSQL skips the tests that need it; in CI (CI=true) a missing
// PostgreSQL fails them, so the PostgreSQL tests can never silently not run there.
package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
)

// Server is one running PostgreSQL.
type Server struct {
	Dir  string // data directory (also holds the socket)
	Port int
	bin  string
	asPG bool // run the server's tools as the postgres user
	n    atomic.Int64
}

// BinDir finds Debian's PostgreSQL binaries (/usr/lib/postgresql/N/bin, newest N), or "".
func BinDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	return ""
}

// ErrMissing: no PostgreSQL installed here.
var ErrMissing = errors.New("PostgreSQL is not installed (Debian: apt-get install postgresql)")

// Start initialises and starts a server in a new temporary directory. Stop it with Stop. It first
// stops the servers of test processes that were killed before they could (orphans.go).
func Start() (*Server, error) {
	bin := BinDir()
	if bin == "" {
		return nil, ErrMissing
	}
	asPG := os.Geteuid() == 0
	reapOrphans(os.TempDir(), bin, asPG)
	dir, err := os.MkdirTemp("", "c2d-pg-")
	if err != nil {
		return nil, err
	}
	if err := writeOwner(dir); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s := &Server{Dir: dir, bin: bin, asPG: asPG}
	if asPG {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("running as root, initdb needs the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	if out, err := s.run("initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	if err := s.start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

func (s *Server) run(tool string, args ...string) ([]byte, error) {
	path := filepath.Join(s.bin, tool)
	var cmd *exec.Cmd
	if s.asPG {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	cmd.Dir = s.Dir
	return cmd.CombinedOutput()
}

// start runs pg_ctl start on a free port (a new one when the old one was taken meanwhile).
func (s *Server) start() error {
	var last error
	for range 5 {
		port := s.Port
		if port == 0 {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			port = l.Addr().(*net.TCPAddr).Port
			l.Close()
		}
		opts := fmt.Sprintf("-k %s -p %d -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200", s.Dir, port)
		out, err := s.run("pg_ctl", "-D", filepath.Join(s.Dir, "data"), "-l", filepath.Join(s.Dir, "log"),
			"-o", opts, "-w", "-t", "60", "start")
		if err == nil {
			s.Port = port
			return nil
		}
		log, _ := os.ReadFile(filepath.Join(s.Dir, "log"))
		last = fmt.Errorf("pg_ctl start: %w\n%s\n%s", err, out, log)
		if s.Port != 0 {
			break // a restart keeps its port: clients reconnect to it
		}
	}
	return last
}

// Restart starts a stopped server again on the same port.
func (s *Server) Restart() error { return s.start() }

// Kill stops the server the way a crash does (pg_ctl stop -m immediate: no shutdown checkpoint).
func (s *Server) Kill() error {
	out, err := s.run("pg_ctl", "-D", filepath.Join(s.Dir, "data"), "-m", "immediate", "-w", "stop")
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %w\n%s", err, out)
	}
	return nil
}

// Stop shuts the server down and removes its directory.
func (s *Server) Stop() {
	s.run("pg_ctl", "-D", filepath.Join(s.Dir, "data"), "-m", "fast", "-w", "stop")
	os.RemoveAll(s.Dir)
}

// URL is the connection string of database db.
func (s *Server) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, db)
}

// NewDB creates an empty database and returns its connection string.
func (s *Server) NewDB(ctx context.Context) (string, error) {
	name := fmt.Sprintf("t%d_%d", os.Getpid(), s.n.Add(1))
	db, err := sql.Open("pgx", s.URL("postgres"))
	if err != nil {
		return "", err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return s.URL(name), nil
}

var (
	shared    *Server
	sharedErr error
	sharedMu  sync.Mutex
)

// DB returns a fresh database on the package's shared server, started on first use; stop it with
// Main. Outside CI it skips t when PostgreSQL is missing; in CI it fails t.
func DB(t testing.TB) string {
	t.Helper()
	sharedMu.Lock()
	if shared == nil && sharedErr == nil {
		shared, sharedErr = Start()
	}
	s, err := shared, sharedErr
	sharedMu.Unlock()
	if err != nil {
		if errors.Is(err, ErrMissing) && !InCI() {
			t.Skip(err)
		}
		t.Fatalf("start PostgreSQL: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url, err := s.NewDB(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return url
}

// Need is DB's skip-or-fail rule for tests that start servers of their own with Start.
func Need(t testing.TB) {
	t.Helper()
	if BinDir() == "" {
		if !InCI() {
			t.Skip(ErrMissing)
		}
		t.Fatal(ErrMissing)
	}
}

// InCI reports whether the tests run in CI (CI=true, as .ci/run and every common CI set it).
func InCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v == "true" || v == "1"
}

// Main runs the package's tests and stops the shared server afterwards: call it from TestMain.
func Main(m *testing.M) int {
	code := m.Run()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared != nil {
		shared.Stop()
	}
	return code
}

// CPU is the processor time the shared server (DB's) used so far: its postmaster with the
// children it reaped, and every live backend (benchmarks report the server's CPU per operation
// beside the client's). Zero when no server runs or /proc cannot be read.
func CPU() time.Duration {
	sharedMu.Lock()
	s := shared
	sharedMu.Unlock()
	if s == nil {
		return 0
	}
	pm, err := postmasterPID(s.Dir)
	if err != nil {
		return 0
	}
	ents, _ := os.ReadDir("/proc")
	var ticks int64
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f := statFields(pid)
		if len(f) < 15 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		n := 2 // utime, stime
		switch {
		case pid == pm:
			n = 4 // and the reaped children's
		case ppid != pm:
			continue
		}
		for _, v := range f[11 : 11+n] {
			t, _ := strconv.ParseInt(v, 10, 64)
			ticks += t
		}
	}
	return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}
