package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Issue #17: a device key inline in a config others can read is warned about, like a readable
// connection_string_file.
func TestInlineKeyInReadableConfigWarned(t *testing.T) {
	for mode, warned := range map[os.FileMode]bool{0o600: false, 0o640: false, 0o644: true, 0o660: true} {
		path := filepath.Join(t.TempDir(), "agent.yaml")
		if err := os.WriteFile(path, []byte(base), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv("STATE_DIRECTORY", t.TempDir())
		r, err := c.Resolve()
		if err != nil {
			t.Fatal(err)
		}
		got := false
		for _, w := range r.Warnings {
			got = got || strings.Contains(w, "the device key is inline in "+path)
		}
		if got != warned {
			t.Errorf("config mode %04o: warned %v, want %v (%q)", mode, got, warned, r.Warnings)
		}
	}
}
