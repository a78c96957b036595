package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// writeJSON prints v as indented JSON plus a newline: one document per command.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeJSONLine prints v on one line (streams: feedback --follow).
func writeJSONLine(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

// table writes aligned columns; Flush prints them.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cols ...string) {
	for i, c := range cols {
		if c == "" {
			cols[i] = "-"
		}
	}
	fmt.Fprintln(t.tw, strings.Join(cols, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// fields prints "Label:  value" lines, aligned.
func fields(w io.Writer, kv ...string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i := 0; i+1 < len(kv); i += 2 {
		v := kv[i+1]
		if v == "" {
			v = "-"
		}
		fmt.Fprintf(tw, "%s:\t%s\n", kv[i], v)
	}
	return tw.Flush()
}

// when formats a time for a person: UTC, seconds, "-" for the zero time.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func whenPtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return when(*t)
}

// maskedKey stands in for a key that is not shown.
const maskedKey = "****"

// spinner shows that c2d is waiting, on a terminal only: a rotating mark, what it waits for and
// the elapsed time, rewritten in place on stderr and erased when done.
type spinner struct {
	w     io.Writer
	start time.Time
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	msg   string
}

func startSpinner(w io.Writer, on bool, msg string) *spinner {
	s := &spinner{w: w, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{}), msg: msg}
	if !on {
		close(s.done)
		return s
	}
	go s.run()
	return s
}

func (s *spinner) set(msg string) {
	s.mu.Lock()
	s.msg = msg
	s.mu.Unlock()
}

func (s *spinner) run() {
	defer close(s.done)
	marks := []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for i := 0; ; i++ {
		s.mu.Lock()
		msg := s.msg
		s.mu.Unlock()
		fmt.Fprintf(s.w, "\r\033[K%s %s (%s)", marks[i%len(marks)], msg, time.Since(s.start).Truncate(time.Second))
		select {
		case <-s.stop:
			fmt.Fprint(s.w, "\r\033[K")
			return
		case <-t.C:
		}
	}
}

// end stops the spinner and erases its line; safe to call more than once.
func (s *spinner) end() {
	select {
	case <-s.done:
		return
	default:
	}
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}
