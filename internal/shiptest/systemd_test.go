package shiptest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// installedUnit copies a unit into dir with its ExecStart binary replaced by an executable that
// exists here, so systemd-analyze checks the unit as it will run rather than complaining that
// /usr/bin/c2d-* is not installed on the build machine.
func installedUnit(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "systemd", name))
	if err != nil {
		t.Fatal(err)
	}
	s := regexp.MustCompile(`/usr/bin/c2d(-agent|-hub)?`).ReplaceAllString(string(b), "/bin/true")
	dst := filepath.Join(dir, name)
	if err := os.WriteFile(dst, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

func systemdAnalyze(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze not found: install systemd (.ci/run does)")
	}
	return p
}

func TestUnitsVerify(t *testing.T) {
	sa := systemdAnalyze(t)
	dir := t.TempDir()
	units := []string{
		installedUnit(t, dir, "c2d-agent.service"),
		installedUnit(t, dir, "c2d-agent.path"),
		installedUnit(t, dir, "c2d-hub.service"),
	}
	out, err := exec.Command(sa, append([]string{"verify"}, units...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// The README quotes these scores; a change that loosens a unit past them fails here.
func TestUnitsSecurityExposure(t *testing.T) {
	sa := systemdAnalyze(t)
	dir := t.TempDir()
	for unit, max := range map[string]float64{"c2d-agent.service": 1.6, "c2d-hub.service": 1.1} {
		path := installedUnit(t, dir, unit)
		out, _ := exec.Command(sa, "security", "--offline=true", "--no-pager", path).CombinedOutput()
		m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("%s: no exposure level in systemd-analyze output:\n%s", unit, out)
		}
		score, _ := strconv.ParseFloat(string(m[1]), 64)
		t.Logf("%s exposure %.1f", unit, score)
		if score > max {
			t.Errorf("%s exposure %.1f, above the %.1f the README quotes", unit, score, max)
		}
	}
}

func TestAgentUnitKeepsWhatGPIONeeds(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "systemd", "c2d-agent.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{
		"Type=notify", "WatchdogSec=", "User=c2d-agent", "SupplementaryGroups=gpio",
		"DeviceAllow=char-gpiochip rw", "StateDirectory=c2d-agent",
		"ConditionPathExists=/etc/c2d/connection-string",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("c2d-agent.service lacks %q", want)
		}
	}
	// Each of these would silently break GPIO or LEDs on a Pi.
	for _, bad := range []string{"PrivateDevices=yes", "ProtectKernelTunables=yes", "PrivateUsers=yes", "User=root"} {
		if strings.Contains(unit, bad) {
			t.Errorf("c2d-agent.service sets %q, which locks the agent out of its hardware", bad)
		}
	}
}
