package guardrail

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/redact"
)

// Kinds Tollgate serves (litellm_params.guardrail).
const (
	KindContentFilter = "litellm_content_filter"
	KindPII           = "litellm_pii"
	KindPresidio      = "presidio"
	KindSecrets       = "hide-secrets"
	KindInjection     = "detect_prompt_injection"
	KindGeneric       = "generic_guardrail_api"
	KindInputLimits   = "tollgate_input_limits"
)

// kindAliases are other names LiteLLM uses for the same kinds.
var kindAliases = map[string]string{
	"detect_secrets": KindSecrets, "hide_secrets": KindSecrets,
	"prompt_injection": KindInjection,
}

// Options are what Build needs besides the config.
type Options struct {
	Recorder Recorder
	// Client makes external guardrails' calls; nil: a client of its own.
	Client *http.Client
	// Getenv reads PRESIDIO_ANALYZER_API_BASE and the like; nil: os.Getenv.
	Getenv func(string) string
}

// Build makes the guardrails of cfg. A kind Tollgate does not serve is
// kept as inactive and named in a warning; a guardrail it serves whose
// settings are wrong is an error, so that the start stops.
func Build(cfg []config.Guardrail, o Options) (*Set, []string, error) {
	s := &Set{byName: map[string]*Guardrail{}, rec: o.Recorder}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Client == nil {
		o.Client = &http.Client{}
	}
	// A guardrail service's redirect is not followed: the 3xx is an
	// answer that fails (open or closed, as configured), never a request
	// (with the call's text and the service's key) to another host.
	nc := *o.Client
	nc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	o.Client = &nc
	var warnings []string
	for i, c := range cfg {
		where := fmt.Sprintf("guardrails[%d]", i)
		if c.GuardrailName == "" {
			return nil, nil, fmt.Errorf("%s: guardrail_name is required", where)
		}
		if _, dup := s.byName[c.GuardrailName]; dup {
			return nil, nil, fmt.Errorf("%s: guardrail_name %q is used twice", where, c.GuardrailName)
		}
		p := c.LiteLLMParams
		kind := p.Guardrail
		if k, ok := kindAliases[kind]; ok {
			kind = k
		}
		mode, err := ParseMode(p.Mode)
		if err != nil {
			return nil, nil, fmt.Errorf("%s (%s): %w", where, c.GuardrailName, err)
		}
		if mode == 0 {
			return nil, nil, fmt.Errorf("%s (%s): mode is required (pre_call, during_call, post_call or logging_only)", where, c.GuardrailName)
		}
		g := &Guardrail{Name: c.GuardrailName, Kind: p.Guardrail, Mode: mode, DefaultOn: p.DefaultOn, Info: c.GuardrailInfo, Params: listParams(p), Active: true}
		switch p.UnreachableFallback {
		case "", "fail_closed":
		case "fail_open":
			g.FailOpen = true
		default:
			return nil, nil, fmt.Errorf("%s (%s): unreachable_fallback must be fail_open or fail_closed, not %q", where, c.GuardrailName, p.UnreachableFallback)
		}
		timeout := 5 * time.Second
		if p.Timeout != nil && time.Duration(*p.Timeout) > 0 {
			timeout = time.Duration(*p.Timeout)
		}
		var w string
		switch kind {
		case KindPII:
			entities := p.EntitiesConfig
			if len(entities) == 0 {
				entities = p.PIIEntitiesConfig
			}
			g.check, w, err = piiFor(entities, redact.PII, p.OutputParsePII)
		case KindSecrets:
			g.check, w, err = piiFor(p.PIIEntitiesConfig, redact.Secrets, false)
		case KindPresidio:
			analyzer := string(p.PresidioAnalyzerAPIBase)
			if analyzer == "" {
				analyzer = o.Getenv("PRESIDIO_ANALYZER_API_BASE")
			}
			anonymizer := string(p.PresidioAnonymizerAPIBase)
			if anonymizer == "" {
				anonymizer = o.Getenv("PRESIDIO_ANONYMIZER_API_BASE")
			}
			if analyzer == "" {
				// No Presidio to call: the built-in validated detectors
				// serve the same entity names.
				g.check, w, err = piiFor(p.PIIEntitiesConfig, redact.PII, p.OutputParsePII)
				w = strings.TrimPrefix(w+"; ", "; ") + "no presidio_analyzer_api_base (or PRESIDIO_ANALYZER_API_BASE): Tollgate's built-in detectors serve it"
			} else {
				g.check, err = newPresidio(o.Client, analyzer, anonymizer, p, timeout)
			}
		case KindContentFilter:
			g.check, err = newFilter(p)
		case KindInjection:
			g.check = injectionCheck{}
		case KindInputLimits:
			g.check = limitCheck{maxBytes: p.MaxInputBytes, maxTokens: p.MaxInputTokens}
		case KindGeneric:
			if p.APIBase == "" {
				return nil, nil, fmt.Errorf("%s (%s): generic_guardrail_api needs api_base", where, c.GuardrailName)
			}
			g.check = &genericCheck{client: o.Client, url: strings.TrimSuffix(string(p.APIBase), "/") + "/beta/litellm_basic_guardrail_api", key: string(p.APIKey), extra: p.AdditionalProviderSpecificParams, timeout: timeout}
		default:
			g.Active = false
			w = fmt.Sprintf("guardrail kind %q is not served by Tollgate: listed as inactive, it checks nothing", p.Guardrail)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s (%s): %w", where, c.GuardrailName, err)
		}
		if g.Active && mode == LoggingOnly {
			w = strings.TrimPrefix(w+"; ", "; ") + "logging_only: logged content is masked by content logging's own redaction (litellm_settings.redact_*), the guardrail does not run"
			g.Active = false
		}
		if w != "" {
			warnings = append(warnings, fmt.Sprintf("%s (%s): %s", where, c.GuardrailName, w))
		}
		s.list = append(s.list, g)
		s.byName[g.Name] = g
	}
	return s, warnings, nil
}

// piiFor builds a PII or secrets check from LiteLLM's entities config
// (ENTITY: MASK|BLOCK); with none, every class of def is masked.
// Entities Tollgate does not detect (PERSON, LOCATION, ...) are a warning.
func piiFor(entities map[string]string, def []redact.Class, restore bool) (*piiCheck, string, error) {
	actions := map[redact.Class]Action{}
	var unknown []string
	for e, a := range entities {
		act, err := parseAction(a, Mask)
		if err != nil {
			return nil, "", fmt.Errorf("entity %s: %w", e, err)
		}
		if !redact.Known(redact.Class(e)) {
			unknown = append(unknown, e)
			continue
		}
		actions[redact.Class(e)] = act
	}
	if len(entities) == 0 {
		for _, c := range def {
			actions[c] = Mask
		}
	}
	w := ""
	if len(unknown) > 0 {
		w = "entities not detected by Tollgate are ignored: " + strings.Join(sortedCopy(unknown), ", ")
	}
	if len(actions) == 0 {
		return nil, "", fmt.Errorf("no entity Tollgate detects is configured (it detects %s)", classNames())
	}
	p, err := newPII(actions, numberedTag, restore)
	return p, w, err
}

func classNames() string {
	var out []string
	for _, c := range redact.All() {
		out = append(out, string(c))
	}
	return strings.Join(out, ", ")
}

func sortedCopy(xs []string) []string {
	out := append([]string(nil), xs...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// newFilter builds litellm_content_filter.
func newFilter(p config.GuardrailParams) (*filterCheck, error) {
	f := &filterCheck{wordTag: "[KEYWORD_REDACTED]"}
	if p.KeywordRedactionTag != "" {
		f.wordTag = p.KeywordRedactionTag
	}
	format := "[{pattern_name}_REDACTED]"
	if p.PatternRedactionFormat != "" {
		if !strings.Contains(p.PatternRedactionFormat, "{pattern_name}") {
			return nil, fmt.Errorf("pattern_redaction_format must hold {pattern_name}")
		}
		format = p.PatternRedactionFormat
	}
	f.patTag = func(name string) string { return strings.ReplaceAll(format, "{pattern_name}", strings.ToUpper(name)) }
	actions := map[redact.Class]Action{}
	for i, pat := range p.Patterns {
		act, err := parseAction(pat.Action, Block)
		if err != nil {
			return nil, fmt.Errorf("patterns[%d]: %w", i, err)
		}
		switch pat.PatternType {
		case "prebuilt", "":
			cls, ok := prebuilt[pat.PatternName]
			if !ok {
				names := make([]string, 0, len(prebuilt))
				for n := range prebuilt {
					names = append(names, n)
				}
				return nil, fmt.Errorf("patterns[%d]: unknown prebuilt pattern %q (known: %s)", i, pat.PatternName, strings.Join(sortedCopy(names), ", "))
			}
			if prev, ok := actions[cls]; !ok || act == Block || prev == Block {
				if ok && prev == Block {
					act = Block
				}
				actions[cls] = act
			}
		case "regex":
			re, err := regexp.Compile(pat.Pattern)
			if err != nil {
				return nil, fmt.Errorf("patterns[%d]: %w", i, err)
			}
			name := pat.Name
			if name == "" {
				name = fmt.Sprintf("pattern_%d", i)
			}
			f.regexes = append(f.regexes, namedRegex{name: name, re: re, action: act})
		default:
			return nil, fmt.Errorf("patterns[%d]: pattern_type must be prebuilt or regex, not %q", i, pat.PatternType)
		}
	}
	if len(actions) > 0 {
		// Each class's tag is [<CLASS>_REDACTED] in LiteLLM's style.
		pii, err := newPII(actions, func(class string, _ int) string { return f.patTag(class) }, false)
		if err != nil {
			return nil, err
		}
		f.pii = pii
	}
	for i, w := range p.BlockedWords {
		if strings.TrimSpace(w.Keyword) == "" {
			return nil, fmt.Errorf("blocked_words[%d]: keyword is empty", i)
		}
		act, err := parseAction(w.Action, Block)
		if err != nil {
			return nil, fmt.Errorf("blocked_words[%d]: %w", i, err)
		}
		// (?i) with the keyword quoted: case-folded matching whose
		// indices are the text's own, in linear time.
		// An ASCII keyword also keeps its lower case form: over ASCII
		// text (no folding beyond ASCII's can apply) a byte scan finds
		// what the expression would, several times faster.
		kw := foldJoiners(w.Keyword)
		k := keyword{re: regexp.MustCompile(`(?i)` + regexp.QuoteMeta(kw)), action: act}
		if kw != "" && !hasNonASCII(kw) {
			k.lower = strings.ToLower(kw)
		}
		f.words = append(f.words, k)
	}
	if f.pii == nil && len(f.regexes) == 0 && len(f.words) == 0 {
		return nil, fmt.Errorf("litellm_content_filter needs patterns or blocked_words")
	}
	return f, nil
}

// listParams are the litellm_params /guardrails/list shows: never a
// credential.
func listParams(p config.GuardrailParams) map[string]any {
	m := map[string]any{"guardrail": p.Guardrail, "mode": []string(p.Mode), "default_on": p.DefaultOn}
	if p.APIBase != "" {
		m["api_base"] = shownURL(string(p.APIBase))
	}
	if p.OutputParsePII {
		m["output_parse_pii"] = true
	}
	if p.UnreachableFallback != "" {
		m["unreachable_fallback"] = p.UnreachableFallback
	}
	if len(p.PIIEntitiesConfig) > 0 {
		m["pii_entities_config"] = p.PIIEntitiesConfig
	}
	if len(p.EntitiesConfig) > 0 {
		m["entities_config"] = p.EntitiesConfig
	}
	return m
}

// shownURL is u without credentials: scheme, host and path only (no user
// info, query or fragment). What does not parse as a URL is not shown.
func shownURL(u string) string {
	pu, err := url.Parse(u)
	if err != nil || pu.Host == "" {
		return "(not shown)"
	}
	return (&url.URL{Scheme: pu.Scheme, Host: pu.Host, Path: pu.Path}).String()
}
