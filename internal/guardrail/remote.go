package guardrail

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tollgate/tollgate/internal/config"
)

// maxRemoteAnswer bounds an external guardrail's answer.
const maxRemoteAnswer = 4 << 20

// post sends v as JSON to url within timeout and decodes the answer into
// out. Any failure (unreachable, timeout, a non-2xx, an answer that does
// not decode) wraps ErrUnavailable.
func post(ctx context.Context, client *http.Client, url, key string, timeout time.Duration, v, out any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%w: no answer within %s", ErrUnavailable, timeout)
		}
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxRemoteAnswer))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%w: %s answered %d", ErrUnavailable, url, resp.StatusCode)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%w: the answer is not what was expected: %v", ErrUnavailable, err)
	}
	return nil
}

// genericCheck calls LiteLLM's generic guardrail API:
// POST {api_base}/beta/litellm_basic_guardrail_api.
type genericCheck struct {
	client  *http.Client
	url     string
	key     string
	extra   map[string]any
	timeout time.Duration
}

type genericRequest struct {
	Texts       []string          `json:"texts"`
	RequestData map[string]string `json:"request_data"`
	InputType   string            `json:"input_type"`
	CallID      string            `json:"litellm_call_id,omitempty"`
	Extra       map[string]any    `json:"additional_provider_specific_params"`
}

type genericResponse struct {
	Action        string   `json:"action"`
	BlockedReason string   `json:"blocked_reason"`
	Texts         []string `json:"texts"`
}

func (g *genericCheck) Check(ctx context.Context, in *Input) (Verdict, error) {
	req := genericRequest{Texts: in.Texts, InputType: "request", CallID: in.CallID, Extra: g.extra,
		RequestData: map[string]string{
			"user_api_key_hash": in.KeyHash, "user_api_key_alias": in.KeyAlias,
			"user_api_key_user_id": in.UserID, "user_api_key_team_id": in.TeamID,
			"user_api_key_end_user_id": in.EndUser,
		}}
	if in.Response {
		req.InputType = "response"
	}
	if req.Texts == nil {
		req.Texts = []string{}
	}
	if req.Extra == nil {
		req.Extra = map[string]any{}
	}
	var resp genericResponse
	if err := post(ctx, g.client, g.url, g.key, g.timeout, req, &resp); err != nil {
		return Verdict{}, err
	}
	switch resp.Action {
	case "NONE", "":
		return Verdict{}, nil
	case "BLOCKED":
		reason := resp.BlockedReason
		if reason == "" {
			reason = "blocked by the guardrail service"
		}
		return Verdict{Blocked: true, Reason: clipReason(reason), Entities: map[string]int{"blocked": 1}}, nil
	case "GUARDRAIL_INTERVENED":
		if len(resp.Texts) != len(in.Texts) {
			return Verdict{}, fmt.Errorf("%w: GUARDRAIL_INTERVENED with %d texts for %d", ErrUnavailable, len(resp.Texts), len(in.Texts))
		}
		return Verdict{Texts: resp.Texts, Entities: map[string]int{"intervened": 1}}, nil
	}
	return Verdict{}, fmt.Errorf("%w: unknown action %q", ErrUnavailable, resp.Action)
}

// clipReason bounds a remote service's reason, which reaches the client.
func clipReason(s string) string {
	if len(s) <= 300 {
		return s
	}
	for i := 300; i > 0; i-- {
		if utf8.RuneStart(s[i]) {
			return s[:i] + "…"
		}
	}
	return ""
}

// presidioCheck calls Presidio's analyzer (POST /analyze) for each text
// and masks what it found, with the anonymizer (POST /anonymize) when one
// is configured, else with numbered placeholders of its own; an entity
// configured BLOCK blocks the call.
type presidioCheck struct {
	client               *http.Client
	analyzer, anonymizer string
	language             string
	actions              map[string]Action // empty: every entity is masked
	restore              bool
	timeout              time.Duration
}

func newPresidio(client *http.Client, analyzer, anonymizer string, p config.GuardrailParams, timeout time.Duration) (*presidioCheck, error) {
	c := &presidioCheck{client: client, analyzer: strings.TrimSuffix(analyzer, "/"), anonymizer: strings.TrimSuffix(anonymizer, "/"),
		language: p.PresidioLanguage, restore: p.OutputParsePII, timeout: timeout, actions: map[string]Action{}}
	if c.language == "" {
		c.language = "en"
	}
	for e, a := range p.PIIEntitiesConfig {
		act, err := parseAction(a, Mask)
		if err != nil {
			return nil, fmt.Errorf("entity %s: %w", e, err)
		}
		c.actions[e] = act
	}
	return c, nil
}

type presidioFinding struct {
	EntityType string  `json:"entity_type"`
	Start      int     `json:"start"`
	End        int     `json:"end"`
	Score      float64 `json:"score"`
}

func (p *presidioCheck) Check(ctx context.Context, in *Input) (Verdict, error) {
	var v Verdict
	seen := map[string]string{}
	perClass := map[string]int{}
	for i, t := range in.Texts {
		if strings.TrimSpace(t) == "" {
			continue
		}
		req := map[string]any{"text": t, "language": p.language}
		if len(p.actions) > 0 {
			ents := make([]string, 0, len(p.actions))
			for e := range p.actions {
				ents = append(ents, e)
			}
			req["entities"] = sortedCopy(ents)
		}
		var found []presidioFinding
		if err := post(ctx, p.client, p.analyzer+"/analyze", "", p.timeout, req, &found); err != nil {
			return Verdict{}, err
		}
		found = p.keep(found, t)
		if len(found) == 0 {
			continue
		}
		if v.Entities == nil {
			v.Entities = map[string]int{}
		}
		var mask []presidioFinding
		for _, f := range found {
			v.Entities[f.EntityType]++
			if p.actions[f.EntityType] == Block {
				v.Blocked = true
				continue
			}
			mask = append(mask, f)
		}
		if v.Blocked || len(mask) == 0 {
			continue
		}
		masked, err := p.mask(ctx, t, mask, seen, perClass, &v)
		if err != nil {
			return Verdict{}, err
		}
		if v.Texts == nil {
			v.Texts = append([]string(nil), in.Texts...)
		}
		v.Texts[i] = masked
	}
	if v.Blocked {
		v.Reason = "found " + entityList(v.Entities, func(e string) bool { return p.actions[e] == Block })
		v.Texts, v.Restore = nil, nil
	}
	return v, nil
}

// keep converts Presidio's offsets (in code points) to byte offsets,
// drops what does not fit the text, sorts the findings by start (Presidio
// returns them in no set order, by score as often as not) and then, of
// overlapping findings, keeps the longer (of equal length, the higher
// score).
func (p *presidioCheck) keep(found []presidioFinding, t string) []presidioFinding {
	// code point index → byte offset
	offsets := make([]int, 0, len(t)+1)
	for i := range t {
		offsets = append(offsets, i)
	}
	offsets = append(offsets, len(t))
	valid := found[:0]
	for _, f := range found {
		if f.Start < 0 || f.End <= f.Start || f.End > len(offsets)-1 {
			continue
		}
		f.Start, f.End = offsets[f.Start], offsets[f.End]
		valid = append(valid, f)
	}
	sort.SliceStable(valid, func(i, j int) bool {
		if valid[i].Start != valid[j].Start {
			return valid[i].Start < valid[j].Start
		}
		return valid[i].End-valid[i].Start > valid[j].End-valid[j].Start
	})
	out := valid[:0]
	for _, f := range valid {
		if n := len(out); n > 0 && f.Start < out[n-1].End {
			// Overlaps the last kept one, which starts no later: keep
			// the better. The replacement starts at or after the last's
			// start, so it cannot overlap the one before.
			prev := out[n-1]
			if l, pl := f.End-f.Start, prev.End-prev.Start; l > pl || l == pl && f.Score > prev.Score {
				out[n-1] = f
			}
			continue
		}
		out = append(out, f)
	}
	return out
}

// mask replaces the findings of t: through the anonymizer when one is
// configured (its own <ENTITY_TYPE> replacements), else with numbered
// placeholders.
func (p *presidioCheck) mask(ctx context.Context, t string, found []presidioFinding, seen map[string]string, perClass map[string]int, v *Verdict) (string, error) {
	if p.anonymizer != "" {
		// Presidio's analyzer results are in code points again.
		results := make([]map[string]any, len(found))
		for i, f := range found {
			results[i] = map[string]any{"entity_type": f.EntityType, "start": utf8.RuneCountInString(t[:f.Start]), "end": utf8.RuneCountInString(t[:f.End]), "score": f.Score}
			if p.restore {
				ph := "<" + f.EntityType + ">"
				if _, ok := v.Restore[ph]; !ok {
					if v.Restore == nil {
						v.Restore = map[string]string{}
					}
					v.Restore[ph] = t[f.Start:f.End]
				}
			}
		}
		var out struct {
			Text string `json:"text"`
		}
		if err := post(ctx, p.client, p.anonymizer+"/anonymize", "", p.timeout, map[string]any{"text": t, "analyzer_results": results}, &out); err != nil {
			return "", err
		}
		return out.Text, nil
	}
	var b strings.Builder
	at := 0
	for _, f := range found {
		val := t[f.Start:f.End]
		ph, ok := seen[f.EntityType+"\x00"+val]
		if !ok {
			perClass[f.EntityType]++
			ph = numberedTag(f.EntityType, perClass[f.EntityType])
			seen[f.EntityType+"\x00"+val] = ph
			if p.restore {
				if v.Restore == nil {
					v.Restore = map[string]string{}
				}
				v.Restore[ph] = val
			}
		}
		b.WriteString(t[at:f.Start])
		b.WriteString(ph)
		at = f.End
	}
	b.WriteString(t[at:])
	return b.String(), nil
}
