//go:build !linux

package simhw

import (
	"os"
	"time"
)

// fileWatch follows one file by its modification time where inotify does not exist (a laptop
// running the sim): twice a second, only for the simulator.
type fileWatch struct{ path string }

func watchFile(path string) (*fileWatch, error) { return &fileWatch{path: path}, nil }

func (w *fileWatch) run(stop <-chan struct{}, changed func()) {
	var last time.Time
	var size int64
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		fi, err := os.Stat(w.path)
		if err != nil {
			continue
		}
		if !fi.ModTime().Equal(last) || fi.Size() != size {
			last, size = fi.ModTime(), fi.Size()
			changed()
		}
	}
}
