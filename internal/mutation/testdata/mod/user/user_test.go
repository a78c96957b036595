package user

import (
	"testing"

	"example.com/m/lib"
)

func TestClampEdges(t *testing.T) {
	if got := lib.Clamp(-1, 0, 10); got != 0 {
		t.Errorf("Clamp(-1, 0, 10) = %d", got)
	}
	if got := lib.Clamp(11, 0, 10); got != 10 {
		t.Errorf("Clamp(11, 0, 10) = %d", got)
	}
}

func TestSum(t *testing.T) {
	if got := lib.Sum(4); got != 10 {
		t.Errorf("Sum(4) = %d", got)
	}
}

func TestKind(t *testing.T) {
	if got := lib.Kind(0); got != "zero" {
		t.Errorf("Kind(0) = %q", got)
	}
}
