//go:build unix

package hub

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDataDir takes an exclusive advisory lock on DATA/hub.lock, so a second c2d-hub on the same
// data directory fails at start with a clear error instead of contending for the database. The
// lock dies with the process (kill -9 included).
func lockDataDir(dataDir string) (release func(), err error) {
	path := filepath.Join(dataDir, "hub.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data directory %s is in use by another c2d-hub (lock %s held)", dataDir, path)
		}
		return nil, fmt.Errorf("lock data directory: %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
