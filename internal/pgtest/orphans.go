package pgtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// A test process that is killed (a go test -timeout, a mutation tester's time-out, ^C twice)
// never reaches Main, and its server would run on, holding memory, a port and a directory, until
// the machine restarts: a mutation run leaves one behind for every timed-out mutant. So each
// server's directory names its owner, and Start first stops the servers whose owner is gone (a
// process of this pid namespace: tests sharing /tmp across containers are not a case here).

const ownerFile = "owner" // "PID STARTTIME" of the test process that started the server

// statFields are the fields of /proc/PID/stat after the command, which sits in parentheses and may
// hold spaces: [0] is the state, [1] the parent's pid, [11:15] utime stime cutime cstime, [19] the
// start time. nil if pid is not running.
func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	return strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
}

// processStart is the start time of process pid in clock ticks since boot, which tells a live owner
// from a new process that reused its pid; "" if pid is not running.
func processStart(pid int) string {
	if f := statFields(pid); len(f) >= 20 {
		return f[19]
	}
	return ""
}

// postmasterPID is the pid in the data directory's postmaster.pid (its first line).
func postmasterPID(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
}

func writeOwner(dir string) error {
	pid := os.Getpid()
	return os.WriteFile(filepath.Join(dir, ownerFile), fmt.Appendf(nil, "%d %s\n", pid, processStart(pid)), 0o644)
}

// ownerGone reports whether dir holds a server started by a test process that no longer runs. A
// directory without an owner file (being set up, or not ours) is never taken for an orphan.
func ownerGone(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, ownerFile))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 0 {
		return false
	}
	return processStart(pid) != f[1]
}

// reapOrphans stops, the way a crash does, every server under tmp whose owner is gone, and
// removes its directory; it returns the directories it removed. Errors are not the test's
// business: a server that cannot be stopped is left as it was.
func reapOrphans(tmp, bin string, asPG bool) []string {
	dirs, _ := filepath.Glob(filepath.Join(tmp, "c2d-pg-*"))
	var reaped []string
	for _, dir := range dirs {
		if !ownerGone(dir) {
			continue
		}
		s := &Server{Dir: dir, bin: bin, asPG: asPG}
		if _, err := os.Stat(filepath.Join(dir, "data", "postmaster.pid")); err == nil {
			if s.Kill() != nil {
				continue
			}
		}
		if os.RemoveAll(dir) == nil {
			reaped = append(reaped, dir)
		}
	}
	return reaped
}
