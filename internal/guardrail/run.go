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
			r.Outcomes = append(r.Outcomes, o)
			if g.FailOpen {
				continue
			}
			r.Blocked, r.Reason, r.Unavailable = g, err.Error(), true
			return r
		case v.Blocked:
			o.Action = Blocked
			r.Outcomes = append(r.Outcomes, o)
			r.Blocked, r.Reason = g, v.Reason
			return r
		case v.Texts != nil:
			o.Action = Masked
			cur.Texts = v.Texts
			r.Texts = v.Texts
			for k, val := range v.Restore {
				if r.Restore == nil {
					r.Restore = map[string]string{}
				}
				r.Restore[k] = val
			}
		}
		r.Outcomes = append(r.Outcomes, o)
	}
	return r
}
