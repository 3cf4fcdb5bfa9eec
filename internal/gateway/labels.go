package gateway

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/metrics"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/router"
	"github.com/tollgate/tollgate/internal/store"
)

// maxEchoedName is how much of a client-chosen name (a model, an end user)
// an error message or a log line repeats.
const maxEchoedName = 100

// clip shortens a client-chosen name to maxEchoedName bytes, on a rune
// boundary, marking the cut with "…".
func clip(s string) string {
	if len(s) <= maxEchoedName {
		return s
	}
	cut := maxEchoedName
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// labelValue makes a name a valid metric label value: Prometheus refuses
// (panics on) a label that is not UTF-8, and a client can put any byte in
// a JSON string. Valid names are returned as they are, without a copy.
func labelValue(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// maxWildcardNames bounds how many distinct model names that reached a
// wildcard deployment (and were served) become metric labels.
const maxWildcardNames = 200

// maxTagLabels bounds how many distinct client-chosen request tags become
// metric labels (tag_requests_total, tag_spend_usd_total); the others count
// under metrics.OtherTag. maxOwnTagLabels bounds, apart, the tags an
// operator set (a key's, a team's, a deployment's), so that no client can
// crowd them out.
const (
	maxTagLabels    = 100
	maxOwnTagLabels = 1000
)

// tagLabels maps a request's tags to label values. A tag the operator set
// on the request's key, team or deployment (own) is its own series, up to
// maxOwnTagLabels of them. A tag the client chose is its own series when
// it already is one (either set), else it is admitted only from a request
// that was served (so refused requests cannot mint series) and while fewer
// than maxTagLabels are; the rest count once under metrics.OtherTag. Tags
// are already bounded in number and length (readMeta). nil without tags.
func (o *Telemetry) tagLabels(tags, own []string, status int) []string {
	if len(tags) == 0 {
		return nil
	}
	served := status < 400 && status != 0
	out := make([]string, 0, len(tags))
	other := false
	for _, t := range tags {
		t = labelValue(t)
		_, client := o.tags.m.Load(t)
		_, owned := o.ownTags.m.Load(t)
		switch {
		case client || owned,
			slices.Contains(own, t) && o.ownTags.admit(t, maxOwnTagLabels),
			served && o.tags.admit(t, maxTagLabels):
			out = append(out, t)
		case !other:
			other = true
			out = append(out, metrics.OtherTag)
		}
	}
	return out
}

// nameSet is a bounded set of label values: once full, new names are not
// admitted.
type nameSet struct {
	m sync.Map // string → struct{}
	n atomic.Int64
}

// admit reports whether name is (or now is) in the set.
func (s *nameSet) admit(name string, limit int64) bool {
	if _, ok := s.m.Load(name); ok {
		return true
	}
	if s.n.Add(1) > limit {
		s.n.Add(-1)
		return false
	}
	if _, loaded := s.m.LoadOrStore(name, struct{}{}); loaded {
		s.n.Add(-1)
	}
	return true
}

// labels fills the identifying labels of a metrics.Request so that every
// value comes from the configuration or the store, never from what a
// client chose: the model group a request resolved to (or "unknown"), the
// key's hash prefix and alias for known keys, the user and team of the key
// when they exist, and the end user only when an operator created it. A
// name a wildcard group forwarded is a label only once the upstream served
// it, and at most maxWildcardNames of them.
func (o *Telemetry) labels(m *metrics.Request, rt *router.Router, p *auth.Principal, requested, endUser string, e *store.EndUser, t *provider.Target, status int) {
	m.ModelGroup, m.RequestModel, m.ResponseModel = metrics.Unknown, metrics.Unknown, metrics.Unknown
	if requested != "" && rt != nil {
		if grp, ok := rt.Group(p.ResolveModel(requested)); ok {
			m.ModelGroup, m.RequestModel = grp.Name, grp.Name
			if strings.Contains(grp.Name, "*") && status < 400 && status != 0 && len(requested) <= maxEchoedName {
				if name := labelValue(requested); o.served.admit(name, maxWildcardNames) {
					m.RequestModel = name
				}
			}
		}
	}
	m.ResponseModel = m.RequestModel
	if t != nil && t.D.Model != "" {
		m.ResponseModel = labelValue(t.D.Model)
	}
	if knownKey(p) {
		if len(p.KeyHash) >= 8 {
			m.KeyHash = p.KeyHash[:8]
		}
		if k := p.Key; k != nil && k.KeyAlias != nil {
			m.KeyAlias = labelValue(*k.KeyAlias)
		}
	} else if p.KeyHash != "" {
		m.KeyHash = metrics.Unknown
	}
	if k := p.Key; k != nil {
		if k.UserID != "" {
			m.User = metrics.Unknown
			if p.User != nil {
				m.User = labelValue(k.UserID)
			}
		}
		if k.TeamID != "" {
			m.Team = metrics.Unknown
			if p.Team != nil {
				m.Team = labelValue(k.TeamID)
			}
		}
	}
	if endUser != "" {
		m.EndUser = metrics.Unknown
		if e != nil && configuredEndUser(e) {
			m.EndUser = labelValue(endUser)
		}
	}
}

// configuredEndUser reports whether an operator created or configured e
// (/customer/new, /end_user/new, or a budget, limit, alias or block set on
// it). End users also come into being with their first request, under any
// name a client sends; those are not labels.
func configuredEndUser(e *store.EndUser) bool {
	return e.Metadata != nil || e.Alias != "" || e.MaxBudget != nil || e.Blocked ||
		e.RPMLimit != nil || e.TPMLimit != nil || e.MaxParallelRequests != nil
}

// knownKey reports whether p's key was issued by the gateway (a stored key,
// a static key of the config, the master key) rather than accepted as is:
// an unknown key in open mode, or one a custom_auth hook in replace mode let
// through, is whatever the client sent.
func knownKey(p *auth.Principal) bool {
	switch {
	case p.Master, p.Static != nil:
		return true
	case p.Key == nil:
		return false
	}
	return p.Key.KeyName != customAuthKeyName
}

// customAuthKeyName is the KeyName auth gives the key it makes up for a
// custom_auth hook in replace mode.
const customAuthKeyName = "custom-auth"
