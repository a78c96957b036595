package mutation

import (
	"encoding/json"
	"fmt"
	"os"
)

// Report is gremlins' JSON report (v0.6.0's OutputResult), read and written back with the
// statuses Retest found.
type Report struct {
	GoModule          string          `json:"go_module"`
	Files             []File          `json:"files"`
	TestEfficacy      float64         `json:"test_efficacy"`
	MutationsCoverage float64         `json:"mutations_coverage"`
	MutantsTotal      int             `json:"mutants_total"`
	MutantsKilled     int             `json:"mutants_killed"`
	MutantsLived      int             `json:"mutants_lived"`
	MutantsNotViable  int             `json:"mutants_not_viable"`
	MutantsNotCovered int             `json:"mutants_not_covered"`
	ElapsedTime       float64         `json:"elapsed_time"`
	MutatorStatistics json.RawMessage `json:"mutator_statistics,omitempty"`
	// RetestedWith says what Retest ran: the test packages and -run pattern; empty in gremlins' own.
	RetestedWith string `json:"retested_with,omitempty"`
}

// File is one mutated file; its name is relative to the package gremlins was given.
type File struct {
	Filename  string     `json:"file_name"`
	Mutations []Mutation `json:"mutations"`
}

// Mutation is one mutant: gremlins' mutator type (ARITHMETIC_BASE, …), its status and the
// position of the token it changes (1-based line and byte column).
type Mutation struct {
	Type   string `json:"type"`
	Status string `json:"status"`
	Line   int    `json:"line"`
	Column int    `json:"column"`
}

// gremlins' statuses, and the ones Retest gives.
const (
	Killed     = "KILLED"
	Lived      = "LIVED"
	NotCovered = "NOT COVERED"
	NotViable  = "NOT VIABLE"
	TimedOut   = "TIMED OUT"
)

// ReadReport reads a gremlins JSON report.
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read report: %w", err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("read report %s: %w", path, err)
	}
	for _, f := range r.Files {
		if f.Filename == "" {
			return nil, fmt.Errorf("read report %s: a file without file_name", path)
		}
		for _, m := range f.Mutations {
			if m.Line < 1 || m.Column < 1 {
				return nil, fmt.Errorf("read report %s: %s: mutant %s at %d:%d: no such position", path, f.Filename, m.Type, m.Line, m.Column)
			}
		}
	}
	return &r, nil
}

// Count is the number of r's mutants with the status.
func (r *Report) Count(status string) int {
	n := 0
	for _, f := range r.Files {
		for _, m := range f.Mutations {
			if m.Status == status {
				n++
			}
		}
	}
	return n
}

// Write writes the report as gremlins does, one line of JSON (make mutation's gate reads
// "test_efficacy":N from it with sed).
func (r *Report) Write(path string) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("write report %s: %w", path, err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// Recount sets the report's totals from its mutants' statuses, the way gremlins v0.6.0 counts
// them: efficacy is killed ÷ (killed + lived), coverage (killed + lived) ÷ (killed + lived + not
// covered); a timed-out mutant is in neither (caught, but not counted).
func (r *Report) Recount() {
	killed, lived, notCovered := r.Count(Killed), r.Count(Lived), r.Count(NotCovered)
	r.MutantsKilled, r.MutantsLived, r.MutantsNotViable, r.MutantsNotCovered = killed, lived, r.Count(NotViable), notCovered
	r.MutantsTotal = killed + lived
	r.TestEfficacy, r.MutationsCoverage = 0, 0
	if killed+lived > 0 {
		r.TestEfficacy = 100 * float64(killed) / float64(killed+lived)
	}
	if killed+lived+notCovered > 0 {
		r.MutationsCoverage = 100 * float64(killed+lived) / float64(killed+lived+notCovered)
	}
}
