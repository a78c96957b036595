package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// LockFileName is the file in state_dir a running agent holds an exclusive flock on, so that a
// second agent on the same board, or `check-config --hardware` / `try --hardware`, refuses instead
// of driving outputs a running agent owns. The lock dies with the process (kill -9 included).
const LockFileName = "agent.lock"

// ErrAgentRunning is returned when another process holds the state directory's lock.
var ErrAgentRunning = errors.New("the agent is running")

// lockStateDir takes the lock in dir, writing our pid into the file for the next one to name.
func lockStateDir(dir string) (release func(), err error) {
	path := filepath.Join(dir, LockFileName)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state_dir %s: %w", dir, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state_dir %s: lock: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, runningError(path)
		}
		return nil, fmt.Errorf("state_dir %s: lock %s: %w", dir, path, err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() { f.Close() }, nil
}

func runningError(path string) error {
	who := ""
	if b, err := os.ReadFile(path); err == nil {
		if pid := strings.TrimSpace(string(b)); pid != "" {
			who = " as pid " + pid
		}
	}
	return fmt.Errorf("%w%s (it holds %s) and owns the outputs; stop it first: sudo systemctl stop c2d-agent", ErrAgentRunning, who, path)
}

// lockForHardware is the lock a one-shot hardware command (check-config --hardware, try
// --hardware) takes: a state directory that does not exist means no agent uses it.
func lockForHardware(dir string) (release func(), err error) {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return func() {}, nil
	}
	release, err = lockStateDir(dir)
	if err != nil && errors.Is(err, fs.ErrPermission) {
		return nil, fmt.Errorf("cannot tell whether the agent is running: %w; run it as root (sudo)", err)
	}
	return release, err
}
