package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"sync/atomic"
	"time"

	"github.com/c2d-project/c2d/agent/conn"
)

// reportEvery bounds reported-property updates: changes within it are coalesced into one patch.
const reportEvery = time.Second

// reportTimeout bounds the wait for the hub's 204 (a hub that serves no twins never answers).
const reportTimeout = 10 * time.Second

// reporter keeps the twin's reported properties current: on every connect and after changes,
// coalesced and at most one patch per reportEvery. What it reports is never a secret: output and
// input states, the agent's version, backend, config hash and start time.
type reporter struct {
	a    *agent
	poke chan struct{}
	gen  atomic.Uint64 // bumped on every connect: report again in full
}

func newReporter(a *agent) *reporter { return &reporter{a: a, poke: make(chan struct{}, 1)} }

// changed asks for a report; it never blocks.
func (r *reporter) changed() {
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

func (r *reporter) connected() {
	r.gen.Add(1)
	r.changed()
}

// reported is the patch: the same facts the state method shows, keyed for the twin.
func (a *agent) reported() []byte {
	st := a.boardState()
	outputs := map[string]any{}
	for n, o := range st.Outputs {
		outputs[n] = map[string]any{"state": o.State, "since": o.Since.Format(time.RFC3339Nano)}
	}
	inputs := map[string]any{}
	for n, in := range st.Inputs {
		inputs[n] = map[string]any{"state": in.State, "since": in.Since.Format(time.RFC3339Nano)}
	}
	b, _ := json.Marshal(map[string]any{
		"agent": map[string]any{"version": st.Version, "backend": st.Backend, "configHash": st.ConfigHash,
			"started": st.Started.Format(time.RFC3339)},
		"outputs": outputs,
		"inputs":  inputs,
		"desired": a.follower.reportedPart(),
	})
	return b
}

func (r *reporter) run(done <-chan struct{}) {
	var last []byte
	var lastGen uint64
	for {
		select {
		case <-done:
			return
		case <-r.poke:
		}
		gen := r.gen.Load()
		body := r.a.reported()
		if gen == lastGen && bytes.Equal(body, last) {
			continue
		}
		err := r.a.client.Report(body, reportTimeout)
		switch {
		case err == nil:
			last, lastGen = body, gen
			r.a.log.Debug("reported properties updated", "bytes", len(body))
		case errors.Is(err, conn.ErrReportRefused):
			r.a.log.Warn("the hub refused the reported properties", "err", err)
		default:
			r.a.log.Debug("reported properties not confirmed; sent again on the next change or connect", "err", err)
		}
		t := time.NewTimer(reportEvery)
		select {
		case <-done:
			t.Stop()
			return
		case <-t.C:
		}
	}
}
