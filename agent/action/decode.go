package action

import (
	"strconv"
	"strings"
	"time"

	"github.com/c2d-project/c2d/cloud/iothub"
)

// Message property names (docs/agent.md, "Property reference").
const (
	PropTarget   = "target"
	PropAction   = "action"
	PropCount    = "count"
	PropInterval = "interval"
	PropOn       = "on"
	PropOff      = "off"
	PropDuration = "duration"
	PropCommand  = "command"

	// MetadataPrefix marks sender metadata the agent ignores (x-trace-id=..., x-sent-by=...).
	MetadataPrefix = "x-"
)

// PropertyNames lists the properties the agent reads, in documentation order.
var PropertyNames = []string{PropTarget, PropAction, PropCount, PropInterval, PropOn, PropOff, PropDuration, PropCommand}

// Blink defaults when a message leaves them out.
const (
	DefaultBlinkCount    = 1
	DefaultBlinkInterval = 500 * time.Millisecond
)

// Rules is what the board's config lets messages do to one output.
type Rules struct {
	Name        string
	Actions     []Kind        // allowed actions
	MaxDuration time.Duration // longest pulse, longest blink (count × (on + off))
	MaxCount    int           // most blink cycles
	MinInterval time.Duration // shortest blink on/off time and shortest pulse
	CompleteOn  CompleteOn
}

// Allows reports whether k is among r.Actions.
func (r *Rules) Allows(k Kind) bool {
	for _, a := range r.Actions {
		if a == k {
			return true
		}
	}
	return false
}

// Command is a named sequence of steps from the board's config. Its steps were validated at
// start-up; the owner wrote them, so they are not limited by the outputs' Rules.
type Command struct {
	Name       string
	Steps      []Step
	CompleteOn CompleteOn
}

// Catalog is everything a message may address: outputs and commands, in config order.
type Catalog struct {
	Outputs  []Rules
	Commands []Command
}

func (c *Catalog) output(name string) *Rules {
	for i := range c.Outputs {
		if c.Outputs[i].Name == name {
			return &c.Outputs[i]
		}
	}
	return nil
}

func (c *Catalog) command(name string) *Command {
	for i := range c.Commands {
		if c.Commands[i].Name == name {
			return &c.Commands[i]
		}
	}
	return nil
}

func (c *Catalog) outputNames() string {
	names := make([]string, len(c.Outputs))
	for i, o := range c.Outputs {
		names[i] = o.Name
	}
	return listOrNone(names)
}

func (c *Catalog) commandNames() string {
	names := make([]string, len(c.Commands))
	for i, o := range c.Commands {
		names[i] = o.Name
	}
	return listOrNone(names)
}

func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

func kindList(ks []Kind) string {
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = string(k)
	}
	return listOrNone(s)
}

// Decode validates a message's properties against the catalog and returns its plan, or a
// *Rejection whose Reason says exactly what is wrong. now decides expiry ($.exp).
func (c *Catalog) Decode(m *iothub.Message, now time.Time) (*Plan, error) {
	if !m.ExpiryTime.IsZero() && !now.Before(m.ExpiryTime) {
		return nil, Expired(m.ExpiryTime)
	}
	props := make(map[string]string, len(m.Properties))
	for _, p := range m.Properties {
		if strings.HasPrefix(strings.ToLower(p.Name), MetadataPrefix) {
			continue
		}
		if !knownProperty(p.Name) {
			return nil, reject("unknown property %q (properties: %s)", p.Name, strings.Join(PropertyNames, ", "))
		}
		if _, dup := props[p.Name]; dup {
			return nil, reject("property %q appears more than once", p.Name)
		}
		props[p.Name] = p.Value
	}
	for _, name := range PropertyNames {
		if v, ok := props[name]; ok && v == "" {
			return nil, reject("malformed property %q: empty value", name)
		}
	}

	if name, ok := props[PropCommand]; ok {
		for _, other := range PropertyNames {
			if _, ok := props[other]; ok && other != PropCommand {
				return nil, reject("property %q cannot be combined with %q", other, PropCommand)
			}
		}
		cmd := c.command(name)
		if cmd == nil {
			return nil, reject("unknown command %q (declared: %s)", name, c.commandNames())
		}
		return NewPlan(m.MessageID, cmd.Name, cmd.Steps, cmd.CompleteOn, m.ExpiryTime), nil
	}

	target, hasTarget := props[PropTarget]
	actionName, hasAction := props[PropAction]
	switch {
	case !hasTarget && !hasAction:
		return nil, reject("nothing to do: set properties %q and %q, or %q", PropTarget, PropAction, PropCommand)
	case !hasTarget:
		return nil, reject("missing property %q", PropTarget)
	}
	rules := c.output(target)
	if rules == nil {
		return nil, reject("unknown target %q (declared: %s)", target, c.outputNames())
	}
	if !hasAction {
		return nil, reject("missing property %q", PropAction)
	}
	kind, ok := ParseKind(actionName)
	if !ok {
		return nil, reject("unknown action %q (actions: %s)", actionName, kindList(Kinds))
	}
	if !rules.Allows(kind) {
		return nil, reject("action %q not allowed on %s (allowed: %s)", kind, target, kindList(rules.Actions))
	}
	for _, name := range []string{PropCount, PropInterval, PropOn, PropOff, PropDuration} {
		if _, ok := props[name]; ok && !applies(kind, name) {
			return nil, reject("property %q does not apply to action %q", name, kind)
		}
	}

	step := Step{Action: kind, Target: target}
	switch kind {
	case Blink:
		if err := decodeBlink(&step, props, rules); err != nil {
			return nil, err
		}
	case Pulse:
		raw, ok := props[PropDuration]
		if !ok {
			return nil, reject("missing property %q for action %q", PropDuration, kind)
		}
		d, err := durationProp(PropDuration, raw)
		if err != nil {
			return nil, err
		}
		if d < rules.MinInterval {
			return nil, reject("duration %s is below %s's min_interval %s", FormatDuration(d), target, FormatDuration(rules.MinInterval))
		}
		if d > rules.MaxDuration {
			return nil, reject("duration %s exceeds %s's max_duration %s", FormatDuration(d), target, FormatDuration(rules.MaxDuration))
		}
		step.Duration = d
	}
	return NewPlan(m.MessageID, "", []Step{step}, rules.CompleteOn, m.ExpiryTime), nil
}

// Expired is the rejection of a message whose $.exp has passed.
func Expired(exp time.Time) *Rejection {
	return reject("message expired at %s", exp.UTC().Format(time.RFC3339))
}

func decodeBlink(step *Step, props map[string]string, rules *Rules) error {
	step.Count = DefaultBlinkCount
	if raw, ok := props[PropCount]; ok {
		if !isDigits(raw) {
			return reject("malformed property %q: %q is not a whole number", PropCount, raw)
		}
		n, err := strconv.Atoi(raw)
		if err != nil || n > rules.MaxCount {
			return reject("count %s exceeds %s's max_count %d", raw, rules.Name, rules.MaxCount)
		}
		if n < 1 {
			return reject("count %s is below the minimum 1", raw)
		}
		step.Count = n
	}
	step.On, step.Off = DefaultBlinkInterval, DefaultBlinkInterval
	_, hasOn := props[PropOn]
	_, hasOff := props[PropOff]
	if raw, ok := props[PropInterval]; ok {
		if hasOn || hasOff {
			return reject("property %q cannot be combined with %q or %q", PropInterval, PropOn, PropOff)
		}
		d, err := durationProp(PropInterval, raw)
		if err != nil {
			return err
		}
		step.On, step.Off = d, d
	}
	for _, p := range []struct {
		name string
		dst  *time.Duration
	}{{PropOn, &step.On}, {PropOff, &step.Off}} {
		raw, ok := props[p.name]
		if !ok {
			continue
		}
		d, err := durationProp(p.name, raw)
		if err != nil {
			return err
		}
		*p.dst = d
	}
	for _, p := range []struct {
		name string
		d    time.Duration
	}{{PropOn, step.On}, {PropOff, step.Off}} {
		if p.d < rules.MinInterval {
			return reject("%s %s is below %s's min_interval %s", p.name, FormatDuration(p.d), rules.Name, FormatDuration(rules.MinInterval))
		}
	}
	if total := step.Busy(); total == maxDuration {
		return reject("blink of %d × (%s on + %s off) is too large: it exceeds %s's max_duration %s",
			step.Count, FormatDuration(step.On), FormatDuration(step.Off), rules.Name, FormatDuration(rules.MaxDuration))
	} else if total > rules.MaxDuration {
		return reject("blink of %d × (%s on + %s off) = %s exceeds %s's max_duration %s",
			step.Count, FormatDuration(step.On), FormatDuration(step.Off), FormatDuration(total), rules.Name, FormatDuration(rules.MaxDuration))
	}
	return nil
}

func durationProp(name, raw string) (time.Duration, error) {
	d, err := ParseDuration(raw)
	if err != nil {
		return 0, reject("malformed property %q: %s", name, err.Error())
	}
	return d, nil
}

func knownProperty(name string) bool {
	for _, p := range PropertyNames {
		if p == name {
			return true
		}
	}
	return false
}

func applies(k Kind, prop string) bool {
	switch k {
	case Blink:
		return prop == PropCount || prop == PropInterval || prop == PropOn || prop == PropOff
	case Pulse:
		return prop == PropDuration
	}
	return false
}
