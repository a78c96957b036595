package simhw

import (
	"os"
	"path/filepath"
	"syscall"
	"unsafe"
)

// fileWatch follows one file through inotify on its directory, so that a file replaced by a
// rename (WriteInputs, editors) is seen as well as one written in place.
type fileWatch struct {
	f    *os.File
	base string
}

func watchFile(path string) (*fileWatch, error) {
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC | syscall.IN_NONBLOCK)
	if err != nil {
		return nil, os.NewSyscallError("inotify_init1", err)
	}
	if _, err := syscall.InotifyAddWatch(fd, filepath.Dir(path), syscall.IN_CLOSE_WRITE|syscall.IN_MOVED_TO); err != nil {
		syscall.Close(fd)
		return nil, os.NewSyscallError("inotify_add_watch", err)
	}
	// A non-blocking descriptor goes through Go's poller: Close unblocks a Read in progress.
	return &fileWatch{f: os.NewFile(uintptr(fd), "inotify"), base: filepath.Base(path)}, nil
}

// run calls changed after every event about the file, until stop is closed.
func (w *fileWatch) run(stop <-chan struct{}, changed func()) {
	go func() { <-stop; w.f.Close() }()
	buf := make([]byte, 64*(syscall.SizeofInotifyEvent+syscall.NAME_MAX+1))
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			return
		}
		hit := false
		for off := 0; off+syscall.SizeofInotifyEvent <= n; {
			ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := buf[off+syscall.SizeofInotifyEvent : off+syscall.SizeofInotifyEvent+int(ev.Len)]
			if i := indexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if string(name) == w.base || ev.Mask&syscall.IN_Q_OVERFLOW != 0 {
				hit = true
			}
			off += syscall.SizeofInotifyEvent + int(ev.Len)
		}
		if hit {
			changed()
		}
	}
}
