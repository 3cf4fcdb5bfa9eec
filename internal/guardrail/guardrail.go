// Package guardrail checks what goes to a model and what comes back:
// personal data and secrets (masked with stable, reversible placeholders
// or blocked), keyword and regex blocklists, well-known prompt-injection
// phrasings, input size and token limits, and external guardrails over
// HTTP (LiteLLM's generic guardrail API, Presidio's analyzer and
// anonymizer). Guardrails are configured by LiteLLM's guardrails list
// and selected per request, per key and per team.
//
// The built-in checks run in time linear in the text and never log or
// return the text they find: an Outcome names the guardrail, the entity
// types, their counts and the action.
package guardrail

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Mode is when a guardrail runs, a set of LiteLLM's event hooks.
type Mode uint8

// The modes.
const (
	PreCall     Mode = 1 << iota // on the input, before the upstream is called
	DuringCall                   // on the input, beside the upstream call; its answer waits for it
	PostCall                     // on the answer, whole or streamed
	LoggingOnly                  // on what is logged only: the gateway's content logging masks it already
)

var modeNames = []struct {
	m    Mode
	name string
}{{PreCall, "pre_call"}, {DuringCall, "during_call"}, {PostCall, "post_call"}, {LoggingOnly, "logging_only"}}

// String lists the modes as LiteLLM names them.
func (m Mode) String() string {
	var out []string
	for _, n := range modeNames {
		if m&n.m != 0 {
			out = append(out, n.name)
		}
	}
	return strings.Join(out, ",")
}

// Names are the modes as LiteLLM names them.
func (m Mode) Names() []string {
	if m == 0 {
		return []string{}
	}
	return strings.Split(m.String(), ",")
}

// ParseMode reads LiteLLM's mode names.
func ParseMode(names []string) (Mode, error) {
	var m Mode
	for _, s := range names {
		i := slices.IndexFunc(modeNames, func(n struct {
			m    Mode
			name string
		}) bool {
			return n.name == s
		})
		if i < 0 {
			return 0, fmt.Errorf("unknown mode %q (want pre_call, during_call, post_call or logging_only)", s)
		}
		m |= modeNames[i].m
	}
	return m, nil
}

// Action is what a finding makes a guardrail do.
type Action string

// The actions, as LiteLLM writes them.
const (
	Block Action = "BLOCK"
	Mask  Action = "MASK"
)

// parseAction reads BLOCK or MASK in any case; "" is def.
func parseAction(s string, def Action) (Action, error) {
	switch strings.ToUpper(s) {
	case "":
		return def, nil
	case "BLOCK":
		return Block, nil
	case "MASK", "REDACT":
		return Mask, nil
	}
	return "", fmt.Errorf("unknown action %q (want BLOCK or MASK)", s)
}

// Input is what a guardrail checks.
type Input struct {
	Texts    []string
	Response bool   // the texts are an answer (post_call), else the request
	Model    string // the model asked for
	CallID   string
	// Who asked, for external guardrails' request_data.
	KeyHash, KeyAlias, UserID, TeamID, EndUser string
	// MaxInputBytes and MaxInputTokens are the key's own input limits
	// (its metadata); they can only tighten tollgate_input_limits'; 0: none.
	MaxInputBytes, MaxInputTokens int64
	// Body is the request's raw body (input limits measure it).
	Body []byte
}

// Verdict is what one guardrail decided.
type Verdict struct {
	Blocked bool
	// Reason says why, without the text found: safe to show and log.
	Reason string
	// Texts replaces Input.Texts when the guardrail masked something;
	// nil when nothing changed.
	Texts []string
	// Edits, when not nil, say how each changed text came from the
	// input's: Texts[i] is Input.Texts[i] with Edits[i] applied. They let
	// RewriteEdits patch the masked spans into the body instead of
	// re-encoding whole texts; a guardrail may leave them out.
	Edits [][]Edit
	// Entities counts the findings by entity type (or pattern or
	// keyword name).
	Entities map[string]int
	// Restore maps the placeholders this guardrail put in the request back
	// to their text, when it parses its placeholders out of the answer
	// (output_parse_pii).
	Restore map[string]string
}

// Checker is a guardrail's check.
type Checker interface {
	Check(ctx context.Context, in *Input) (Verdict, error)
}

// Guardrail is one configured guardrail.
type Guardrail struct {
	Name      string
	Kind      string // litellm_params.guardrail
	Mode      Mode
	DefaultOn bool
	// Active is false for a kind Tollgate does not serve: listed, never run.
	Active bool
	// FailOpen: an external guardrail that cannot answer lets the call
	// through (unreachable_fallback: fail_open); else the call is refused.
	FailOpen bool
	// Params are the litellm_params as /guardrails/list shows them, with
	// credentials left out; Info is guardrail_info.
	Params map[string]any
	Info   map[string]any
	check  Checker
}

// Check runs the guardrail.
func (g *Guardrail) Check(ctx context.Context, in *Input) (Verdict, error) {
	if g.check == nil {
		return Verdict{}, nil
	}
	return g.check.Check(ctx, in)
}

// ErrUnavailable wraps an external guardrail's failure to answer.
var ErrUnavailable = errors.New("guardrail unavailable")

// Set is the configured guardrails, by name, in config order.
type Set struct {
	list   []*Guardrail
	byName map[string]*Guardrail
	rec    Recorder
}

// Recorder counts guardrail outcomes (the metrics); nil counts nothing.
type Recorder interface {
	GuardrailOutcome(guardrail, action, entity string, n int)
}

// List returns every guardrail, active or not, in config order.
func (s *Set) List() []*Guardrail {
	if s == nil {
		return nil
	}
	return s.list
}

// Get returns the guardrail named name.
func (s *Set) Get(name string) (*Guardrail, bool) {
	if s == nil {
		return nil, false
	}
	g, ok := s.byName[name]
	return g, ok
}

// Empty reports whether no guardrail is active.
func (s *Set) Empty() bool {
	if s == nil {
		return true
	}
	for _, g := range s.list {
		if g.Active {
			return false
		}
	}
	return true
}

// Select returns the active guardrails a call runs: every default_on one
// and those named by the request, its key and its team (unknown names are
// an error naming them), in config order.
func (s *Set) Select(names ...[]string) ([]*Guardrail, error) {
	if s == nil {
		return nil, nil
	}
	want := map[string]bool{}
	var unknown []string
	for _, list := range names {
		for _, n := range list {
			if _, ok := s.byName[n]; !ok {
				unknown = append(unknown, n)
				continue
			}
			want[n] = true
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("unknown guardrail %s (configured: %s)", quoteList(unknown), quoteList(s.names()))
	}
	var out []*Guardrail
	for _, g := range s.list {
		if g.Active && (g.DefaultOn || want[g.Name]) {
			out = append(out, g)
		}
	}
	return out, nil
}

func (s *Set) names() []string {
	out := make([]string, len(s.list))
	for i, g := range s.list {
		out[i] = g.Name
	}
	return out
}

func quoteList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = fmt.Sprintf("%q", x)
	}
	return strings.Join(q, ", ")
}

// Record counts an outcome in the metrics.
func (s *Set) Record(o Outcome) {
	if s == nil || s.rec == nil {
		return
	}
	if len(o.Entities) == 0 {
		s.rec.GuardrailOutcome(o.Guardrail, o.Action, "", 1)
		return
	}
	for e, n := range o.Entities {
		s.rec.GuardrailOutcome(o.Guardrail, o.Action, e, n)
	}
}

// Outcome is what one guardrail did to one call, as logged, counted and
// written to the spend log: never the text it found.
type Outcome struct {
	Guardrail string         `json:"guardrail"`
	Mode      string         `json:"mode"`   // pre_call, during_call or post_call
	Action    string         `json:"action"` // passed, masked, blocked, error (failed open)
	Entities  map[string]int `json:"entities,omitempty"`
}

// Outcome actions.
const (
	Passed  = "passed"
	Masked  = "masked"
	Blocked = "blocked"
	Failed  = "error"
)
