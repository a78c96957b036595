package periphhw

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/c2d-project/c2d/hw"
)

// When /dev/gpiochip* exist but cannot be opened, periph skips its driver without an error; the
// user must hear why, not "no line GPIO17".
func TestNoChipsExplainsPermission(t *testing.T) {
	dir := t.TempDir()
	glob := filepath.Join(dir, "gpiochip*")
	err := noChips(glob, openDev)
	if !errors.Is(err, hw.ErrNotFound) || !strings.HasPrefix(err.Error(), "no GPIO chips: nothing matches "+glob) {
		t.Fatalf("no device nodes: %v", err)
	}

	for _, n := range []string{"gpiochip0", "gpiochip1"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	denied := func(p string) error {
		return &fs.PathError{Op: "open", Path: p, Err: syscall.EACCES}
	}
	err = noChips(glob, denied)
	want := "cannot open " + filepath.Join(dir, "gpiochip0") + ": permission denied — is the user in the gpio group?"
	if err == nil || !strings.HasPrefix(err.Error(), want) || !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("denied: %v, want %s", err, want)
	}
	if d := diagnose(glob, denied); !strings.Contains(d, want) || !strings.Contains(d, "gpiochip1") {
		t.Fatalf("diagnose: %q", d)
	}
	if d := diagnose(glob, openDev); d != "" {
		t.Fatalf("diagnose with openable nodes: %q", d)
	}
}

// A pin that does not resolve while some chip could not be opened says so.
func TestNotFoundCarriesDiagnosis(t *testing.T) {
	sys := System{Diagnose: func() string {
		return "cannot open /dev/gpiochip1: permission denied — is the user in the gpio group?"
	}}
	_, err := sys.Resolve([]hw.OutputSpec{{Name: "r", Kind: hw.KindGPIO, Pin: "GPIO17", Line: -1}}, Options{})
	want := `r.pin: no line "GPIO17" (chips: none); cannot open /dev/gpiochip1: permission denied — is the user in the gpio group?`
	if err == nil || err.Error() != want || !errors.Is(err, hw.ErrNotFound) {
		t.Fatalf("got %v, want %s", err, want)
	}
}
