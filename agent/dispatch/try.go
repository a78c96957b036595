package dispatch

import (
	"fmt"
	"strings"
)

// BusyError is TrySubmit's refusal: outputs held or claimed by other jobs.
type BusyError struct{ Outputs []string }

func (e *BusyError) Error() string {
	return "busy: " + strings.Join(e.Outputs, ", ") + " is running another command; try again when it is done"
}

// TrySubmit starts j now if every output it needs is free and unclaimed by a queued job, and
// otherwise refuses with *BusyError without queueing: a direct method never waits on a busy
// output (its caller's timeout would end first). After Shutdown it returns ErrShutdown.
func (d *Dispatcher) TrySubmit(j *Job) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return fmt.Errorf("not started: %w", ErrShutdown)
	}
	claimed := map[string]bool{}
	for k, v := range d.busy {
		claimed[k] = v
	}
	for _, p := range d.pending {
		for _, t := range p.Plan.Targets {
			claimed[t] = true
		}
	}
	var busy []string
	for _, t := range j.Plan.Targets {
		if claimed[t] {
			busy = append(busy, t)
		}
	}
	if len(busy) > 0 {
		return &BusyError{Outputs: busy}
	}
	d.pending = append(d.pending, j)
	d.scheduleLocked()
	return nil
}

// Busy reports whether a job holds the output right now or is queued for it.
func (d *Dispatcher) Busy(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.busy[name] {
		return true
	}
	for _, p := range d.pending {
		for _, t := range p.Plan.Targets {
			if t == name {
				return true
			}
		}
	}
	return false
}
