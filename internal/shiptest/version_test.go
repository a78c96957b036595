package shiptest

import (
	"os/exec"
	"strings"
	"testing"
)

// debVersion runs scripts/deb/version.sh for a git describe string and a commit time.
func debVersion(t *testing.T, describe, when string) string {
	t.Helper()
	cmd := exec.Command("bash", "scripts/deb/version.sh", describe, when)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("version.sh %s %s: %v\n%s", describe, when, err, out)
	}
	return strings.TrimSpace(string(out))
}

// Every later build must sort higher in dpkg, or `apt install` of a newer package is a downgrade:
// an untagged tree whose hash starts with a digit once got "049be47", one with a letter
// "0.1.0~gitabc…", and dpkg put the first above every later build of the second.
func TestDebVersionsSortByTime(t *testing.T) {
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("dpkg not installed")
	}
	builds := []string{ // oldest first
		debVersion(t, "049be47", "1796000000"),
		debVersion(t, "abc1234", "1796000100"),
		debVersion(t, "9ffee00-dirty", "1796000200"),
		debVersion(t, "v0.2.0", "1796000300"),
		debVersion(t, "v0.2.0-3-g1234abc", "1796000400"),
		debVersion(t, "v0.2.0-3-g1234abc-dirty", "1796000400"),
		debVersion(t, "v0.2.1", "1796000500"),
		debVersion(t, "v1.0.0-1-g0000001", "1796000600"),
	}
	if builds[3] != "0.2.0" || builds[4] != "0.2.0+3.g1234abc" {
		t.Errorf("tagged versions: %q, %q", builds[3], builds[4])
	}
	for i := 1; i < len(builds); i++ {
		if err := exec.Command("dpkg", "--compare-versions", builds[i-1], "lt", builds[i]).Run(); err != nil {
			t.Errorf("dpkg does not sort %q below the later build %q", builds[i-1], builds[i])
		}
	}
	for _, v := range builds {
		if v == "" || v[0] < '0' || v[0] > '9' {
			t.Errorf("Debian version %q must start with a digit", v)
		}
	}
}
