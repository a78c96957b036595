package ledger

import (
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkStart is the executed-id log's share of every command's latency: one start record,
// durable, on the disk the benchmark's temp dir is on (set TMPDIR to the board's state disk).
func BenchmarkStart(b *testing.B) {
	l, err := Open(filepath.Join(b.TempDir(), FileName), Options{MaxIDs: 10000})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	i := 0
	for b.Loop() {
		if err := l.Start(fmt.Sprint("m", i), "0123456789abcdef", t0); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
