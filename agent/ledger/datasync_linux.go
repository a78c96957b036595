package ledger

import (
	"errors"
	"os"
	"syscall"
)

// datasync makes f's written data durable: fdatasync(2), which skips the timestamps a record
// written into preallocated space changes (the size, which it would need, does not change).
// Through SyscallConn, so that a file closed meanwhile (a compaction) gives os.ErrClosed, as
// (*os.File).Sync does, and its descriptor cannot be reused under the call.
func datasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			if serr = syscall.Fdatasync(int(fd)); serr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		// A closed file's descriptor gives poll's "use of closed file", which os maps to
		// os.ErrClosed only in its own methods: ask one of them.
		if _, serr := f.Stat(); errors.Is(serr, os.ErrClosed) {
			return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: os.ErrClosed}
		}
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
	}
	return nil
}
