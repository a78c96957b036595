package shiptest

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// root is the repository root (tests run in internal/shiptest).
var root = func() string {
	wd, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}()

var (
	distOnce sync.Once
	distDir  string
	distErr  error
	distLog  []byte
)

// dist cross-builds every program for every target once per test binary, into a temp dir.
func dist(t *testing.T) string {
	t.Helper()
	distOnce.Do(func() {
		distDir, distErr = os.MkdirTemp("", "c2d-dist-")
		if distErr != nil {
			return
		}
		cmd := exec.Command("bash", "scripts/cross-build.sh", "-o", distDir)
		cmd.Dir, cmd.Env = root, buildEnv()
		distLog, distErr = cmd.CombinedOutput()
	})
	if distErr != nil {
		t.Fatalf("scripts/cross-build.sh: %v\n%s", distErr, distLog)
	}
	return distDir
}

// buildEnv pins the stamped version: git describe says "-dirty" while someone edits the tree, and
// a version that changes between two builds is not what the reproducibility test is about.
func buildEnv() []string {
	return append(os.Environ(), "VERSION=0.0.0-shiptest", "COMMIT=shiptest")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if distDir != "" {
		os.RemoveAll(distDir)
	}
	os.Exit(code)
}

var programs = []string{"c2d-agent", "c2d-hub", "c2d"}

// target describes one cross-build target and how to run it here.
type target struct {
	name    string
	machine elf.Machine
	qemu    []string // nil: runs natively
}

var targets = []target{
	// -cpu arm1176 is the Pi Zero/1 core: a GOARM=7 instruction would die there with SIGILL.
	{"armv6", elf.EM_ARM, []string{"qemu-arm-static", "-cpu", "arm1176"}},
	{"armv7", elf.EM_ARM, []string{"qemu-arm-static", "-cpu", "cortex-a7"}},
	{"arm64", elf.EM_AARCH64, []string{"qemu-aarch64-static"}},
	{"amd64", elf.EM_X86_64, nil},
}

func binary(dir, program string, tg target) string {
	return filepath.Join(dir, program+"_linux_"+tg.name)
}

// run executes a cross-built binary (under qemu-user for ARM) and returns its combined output.
func run(t *testing.T, tg target, bin string, args ...string) (string, error) {
	t.Helper()
	argv := append(append(append([]string{}, tg.qemu...), bin), args...)
	if tg.qemu != nil {
		if _, err := exec.LookPath(tg.qemu[0]); err != nil {
			t.Fatalf("%s not found: install qemu-user-static (.ci/run does)", tg.qemu[0])
		}
	}
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	return string(out), err
}

func TestBinariesAreStaticForTheirMachine(t *testing.T) {
	dir := dist(t)
	for _, p := range programs {
		for _, tg := range targets {
			f, err := elf.Open(binary(dir, p, tg))
			if err != nil {
				t.Fatalf("%s %s: %v", p, tg.name, err)
			}
			if f.Machine != tg.machine {
				t.Errorf("%s_%s is built for %v, want %v", p, tg.name, f.Machine, tg.machine)
			}
			for _, prog := range f.Progs {
				if prog.Type == elf.PT_INTERP {
					t.Errorf("%s_%s has a program interpreter: not a static binary", p, tg.name)
				}
			}
			f.Close()
		}
	}
	sums, err := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range programs {
		for _, tg := range targets {
			if !bytes.Contains(sums, []byte(p+"_linux_"+tg.name+"\n")) {
				t.Errorf("SHA256SUMS lacks %s_linux_%s", p, tg.name)
			}
		}
	}
}

func TestCrossBuildIsReproducible(t *testing.T) {
	first := dist(t)
	second := t.TempDir()
	cmd := exec.Command("bash", "scripts/cross-build.sh", "-o", second, "c2d-agent")
	cmd.Dir, cmd.Env = root, buildEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("second build: %v\n%s", err, out)
	}
	for _, tg := range targets {
		a, err := os.ReadFile(binary(first, "c2d-agent", tg))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(binary(second, "c2d-agent", tg))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("c2d-agent_linux_%s differs between two builds of the same tree", tg.name)
		}
	}
}

func TestEveryBinaryRunsAndPrintsItsVersion(t *testing.T) {
	dir := dist(t)
	for _, p := range programs {
		for _, tg := range targets {
			out, err := run(t, tg, binary(dir, p, tg), "--version")
			if err != nil {
				t.Errorf("%s_%s --version: %v\n%s", p, tg.name, err, out)
				continue
			}
			if !strings.HasPrefix(out, p+" ") || !strings.Contains(out, "commit") {
				t.Errorf("%s_%s --version printed %q, want %q", p, tg.name, out, fmt.Sprintf("%s <version> (commit <sha>)", p))
			}
		}
	}
}
