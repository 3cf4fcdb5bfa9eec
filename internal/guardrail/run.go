package guardrail

import "context"

// Result is what running guardrails of one mode over one input decided.
type Result struct {
	// Blocked is the guardrail that blocked, nil when none did; Reason is
	// its reason (never the text found). Unavailable: it blocked because
	// it could not answer (fail_closed).
	Blocked     *Guardrail
	Reason      string
	Unavailable bool
	// Texts are the input's texts after every mask; nil when none changed.
	Texts []string
	// Edits[i], when not nil, turns the input's i-th text into Texts[i]
	// (RewriteEdits): known while the one guardrail that changed the text
	// said how; nil for a text no guardrail changed, or one a guardrail
	// changed without saying how, or two guardrails changed in turn.
	Edits [][]Edit
	// Restore maps placeholders back to their text (output_parse_pii).
	Restore map[string]string
	// Outcomes, one per guardrail run.
	Outcomes []Outcome
}

// Run runs the guardrails of gs that run in mode, in order, over in: each
// sees the texts the ones before it masked. The first block ends the run.
// An external guardrail that cannot answer blocks, unless it fails open.
func Run(ctx context.Context, gs []*Guardrail, mode Mode, in *Input) Result {
	var r Result
	var touched []bool // the texts a guardrail changed so far
	cur := *in
	modeName := mode.String()
	for _, g := range gs {
		if g.Mode&mode == 0 || !g.Active {
			continue
		}
		v, err := g.Check(ctx, &cur)
		o := Outcome{Guardrail: g.Name, Mode: modeName, Action: Passed, Entities: v.Entities}
		switch {
		case err != nil:
			o.Action = Failed
			r.addOutcome(o, len(gs))
			if g.FailOpen {
				continue
			}
			r.Blocked, r.Reason, r.Unavailable = g, err.Error(), true
			return r
		case v.Blocked:
			o.Action = Blocked
			r.addOutcome(o, len(gs))
			r.Blocked, r.Reason = g, v.Reason
			return r
		case v.Texts != nil:
			o.Action = Masked
			r.noteEdits(cur.Texts, v, &touched)
			cur.Texts = v.Texts
			r.Texts = v.Texts
			for k, val := range v.Restore {
				if r.Restore == nil {
					r.Restore = map[string]string{}
				}
				r.Restore[k] = val
			}
		}
		r.addOutcome(o, len(gs))
	}
	return r
}

// noteEdits records in r.Edits how v changed the texts before: v's
// edits for a text only v changed, nil for a text changed a second time
// (the edits are not composed) or by a guardrail that gave none.
func (r *Result) noteEdits(before []string, v Verdict, touched *[]bool) {
	if len(v.Texts) != len(before) {
		r.Edits, *touched = nil, nil
		return
	}
	if *touched == nil {
		*touched = make([]bool, len(before))
	}
	for i, t := range v.Texts {
		if t == before[i] {
			continue
		}
		var e []Edit
		if len(v.Edits) == len(v.Texts) && !(*touched)[i] {
			e = v.Edits[i]
		}
		(*touched)[i] = true
		if e == nil && r.Edits == nil {
			continue
		}
		if r.Edits == nil {
			r.Edits = make([][]Edit, len(before))
		}
		r.Edits[i] = e
	}
}

// addOutcome appends o to r.Outcomes, room for n made at the first.
func (r *Result) addOutcome(o Outcome, n int) {
	if r.Outcomes == nil {
		r.Outcomes = make([]Outcome, 0, n)
	}
	r.Outcomes = append(r.Outcomes, o)
}
