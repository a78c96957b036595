package pgtest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// running reports whether pid is a live process (a zombie is not).
func running(pid int) bool {
	f := statFields(pid)
	return len(f) > 0 && f[0] != "Z"
}

func mustPostmasterPID(t *testing.T, dir string) int {
	t.Helper()
	pid, err := postmasterPID(dir)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// TestMain doubles as the killed test process of TestServerOfAKilledTestProcessIsStopped: started
// with PGTEST_ORPHAN_CHILD=1 it starts a server, says where, and waits to be killed before any Stop.
func TestMain(m *testing.M) {
	if os.Getenv("PGTEST_ORPHAN_CHILD") != "1" {
		os.Exit(m.Run())
	}
	s, err := Start()
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	fmt.Println("DIR", s.Dir)
	select {}
}

func TestServerOfAKilledTestProcessIsStopped(t *testing.T) {
	Need(t)
	// Not t.TempDir: its parent is private, and the postgres user must reach the servers' directories.
	tmp, err := os.MkdirTemp("", "pgtest-orphans-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	child := exec.Command(os.Args[0])
	child.Env = append(os.Environ(), "PGTEST_ORPHAN_CHILD=1", "TMPDIR="+tmp)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	var orphan string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "DIR "); ok {
			orphan = d
			break
		}
	}
	if orphan == "" {
		child.Process.Kill()
		child.Wait()
		t.Fatal("the child test process started no server")
	}
	child.Process.Kill()
	child.Wait()
	pm := mustPostmasterPID(t, orphan)
	if !running(pm) {
		t.Fatalf("the orphan's postmaster %d stopped by itself: nothing to test", pm)
	}

	// A live process's server in the same directory, and one being set up (no owner yet).
	t.Setenv("TMPDIR", tmp)
	live, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	defer live.Stop()
	settingUp, err := os.MkdirTemp(tmp, "c2d-pg-")
	if err != nil {
		t.Fatal(err)
	}

	if running(pm) {
		(&Server{Dir: orphan, bin: BinDir(), asPG: os.Geteuid() == 0}).Kill()
		t.Fatalf("Start left the killed process's server (postmaster %d) running", pm)
	}
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Errorf("the orphan's directory %s is still there (%v)", orphan, err)
	}
	if !running(mustPostmasterPID(t, live.Dir)) {
		t.Error("a live process's server was stopped")
	}
	if _, err := os.Stat(settingUp); err != nil {
		t.Errorf("a directory without an owner was removed: %v", err)
	}
}

func TestOwnerGone(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) {
		if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if ownerGone(dir) {
		t.Error("no owner file: taken for an orphan")
	}
	if err := writeOwner(dir); err != nil {
		t.Fatal(err)
	}
	if ownerGone(dir) {
		t.Error("this live process taken for gone")
	}
	pid := os.Getpid()
	write(fmt.Sprintf("%d %s\n", pid, processStart(pid)+"0"))
	if !ownerGone(dir) {
		t.Error("a pid reused by another process (other start time) taken for the owner")
	}
	write("0 1\n")
	if ownerGone(dir) {
		t.Error("pid 0 taken for a gone owner")
	}
	write("garbage\n")
	if ownerGone(dir) {
		t.Error("an unreadable owner file taken for an orphan")
	}
}
