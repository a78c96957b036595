package ledger

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// The syncer tells a file a compaction closed under it (os.ErrClosed, not worth a log line) from
// a failed sync; datasync must answer as (*os.File).Sync does.
func TestDatasyncOfAClosedFileIsErrClosed(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("x"); err != nil {
		t.Fatal(err)
	}
	if err := datasync(f); err != nil {
		t.Fatalf("datasync of an open file: %v", err)
	}
	f.Close()
	if err := datasync(f); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("datasync of a closed file = %v, want os.ErrClosed", err)
	}
}
