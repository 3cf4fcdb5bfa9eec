// Package redact finds secrets and personal data in text and masks them,
// so that what Tollgate logs or sends to a logging service carries no API
// key, token, private key, e-mail address, phone number, payment card,
// US social security number, IP address or IBAN. Each finding is replaced
// by its class in angle brackets (<EMAIL_ADDRESS>), the names Presidio and
// LiteLLM's PII masking use.
//
// Detection is linear in the input: cheap byte scans find the few places a
// class can start, and RE2 expressions (Go's regexp, linear time) confirm
// them at those places; numbers are validated (Luhn for cards, mod 97 for
// IBANs, the SSA's rules for SSNs, netip for IP addresses) so that most
// look-alikes are left alone.
package redact

import (
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Class is a kind of sensitive text.
type Class string

// The secret classes.
const (
	APIKey             Class = "API_KEY"               // OpenAI, Anthropic, Google, GitHub, Slack, Stripe keys; LiteLLM and Tollgate virtual keys
	AWSAccessKeyID     Class = "AWS_ACCESS_KEY_ID"     // AKIA..., ASIA...
	AWSSecretAccessKey Class = "AWS_SECRET_ACCESS_KEY" // the 40-character secret named as such
	JWT                Class = "JWT"                   // eyJ....eyJ....sig
	PrivateKey         Class = "PRIVATE_KEY"           // a PEM private key block
	Authorization      Class = "AUTHORIZATION"         // the credential of a Bearer or Basic authorization
)

// The personal-data classes, as Presidio names them.
const (
	EmailAddress Class = "EMAIL_ADDRESS"
	PhoneNumber  Class = "PHONE_NUMBER"
	CreditCard   Class = "CREDIT_CARD"
	USSSN        Class = "US_SSN"
	IPAddress    Class = "IP_ADDRESS"
	IBANCode     Class = "IBAN_CODE"
)

// Secrets and PII list the classes of each kind, in priority order: where
// two findings overlap, the one of the earlier class is kept.
var (
	Secrets = []Class{PrivateKey, JWT, AWSSecretAccessKey, AWSAccessKeyID, APIKey, Authorization}
	PII     = []Class{EmailAddress, CreditCard, IBANCode, USSSN, IPAddress, PhoneNumber}
)

// All is every class, secrets first.
func All() []Class { return slices.Concat(Secrets, PII) }

// Known reports whether c is a class this package detects.
func Known(c Class) bool { return slices.Contains(Secrets, c) || slices.Contains(PII, c) }

// Match is one finding: s[Start:End] is text of class Class.
type Match struct {
	Class      Class
	Start, End int
}

// Redactor finds and masks the classes it was built with. It is safe for
// concurrent use. The nil Redactor finds nothing.
type Redactor struct {
	finders   []finder
	classes   []Class
	minDigits int // the fewest digits a numeric class needs; 0: none chosen
}

type finder struct {
	class Class
	prio  int
	find  func(s string, add func(start, end int)) // nil: numeric only
	// minDigits and check: the class is (also) found in runs of digits.
	minDigits int
	check     func(w string, add func(start, end int))
}

// New returns a Redactor of classes; an unknown class is an error naming
// the known ones.
func New(classes []Class) (*Redactor, error) {
	r := &Redactor{}
	all := All()
	for _, c := range classes {
		i := slices.Index(all, c)
		if i < 0 {
			names := make([]string, len(all))
			for j, k := range all {
				names[j] = string(k)
			}
			return nil, fmt.Errorf("unknown redaction class %q (known: %s)", c, strings.Join(names, ", "))
		}
		if slices.Contains(r.classes, c) {
			continue
		}
		r.classes = append(r.classes, c)
		f := finder{class: c, prio: i, find: finders[c]}
		if n, ok := numeric[c]; ok {
			f.minDigits, f.check = n.minDigits, n.check
			if r.minDigits == 0 || n.minDigits < r.minDigits {
				r.minDigits = n.minDigits
			}
		}
		r.finders = append(r.finders, f)
	}
	slices.SortFunc(r.finders, func(a, b finder) int { return a.prio - b.prio })
	return r, nil
}

// Classes returns the classes r detects.
func (r *Redactor) Classes() []Class {
	if r == nil {
		return nil
	}
	return slices.Clone(r.classes)
}

// minFinding is the shortest text any class can match ("a@b.io").
const minFinding = 6

// collector gathers one Find's matches. Finders are called through
// function values, so a closure over Find's locals would put them on the
// heap on every call (every string of every captured body): collectors
// are pooled instead, add bound once.
type collector struct {
	ms   []Match
	st   []stretch // the stretches of digits, for the IBAN scan
	base int
	cls  Class
	add  func(start, end int)
}

var collectors = sync.Pool{New: func() any {
	c := &collector{}
	c.add = func(start, end int) {
		if start < end {
			c.ms = append(c.ms, Match{Class: c.cls, Start: c.base + start, End: c.base + end})
		}
	}
	return c
}}

// Find returns the findings in s, in order, none overlapping another.
func (r *Redactor) Find(s string) []Match {
	if r == nil || len(r.finders) == 0 || len(s) < minFinding {
		return nil
	}
	c := collectors.Get().(*collector)
	c.ms, c.base, c.cls, c.st = nil, 0, "", c.st[:0]
	iban := false // IBANs found from the numbers' pass, below
	for _, f := range r.finders {
		if f.class == IBANCode && r.minDigits > 0 {
			iban = true
			continue
		}
		if f.find != nil {
			c.cls = f.class
			f.find(s, c.add)
		}
	}
	if r.minDigits > 0 {
		var st *[]stretch
		if iban {
			st = &c.st
		}
		digitWindows(s, r.minDigits, func(at int, w string, digits int) {
			for _, f := range r.finders {
				if f.check != nil && digits >= f.minDigits {
					c.base, c.cls = at, f.class
					f.check(w, c.add)
				}
			}
		}, st)
		if iban {
			// One pass over the text finds every digit for both: the
			// IBAN scan reads only the stretches it recorded.
			c.base, c.cls = 0, IBANCode
			findIBANsIn(s, c.st, c.add)
		}
	}
	ms := c.ms
	c.ms = nil
	collectors.Put(c)
	if len(ms) < 2 {
		return ms
	}
	prio := func(c Class) int {
		for _, f := range r.finders {
			if f.class == c {
				return f.prio
			}
		}
		return 0
	}
	slices.SortStableFunc(ms, func(a, b Match) int {
		if a.Start != b.Start {
			return a.Start - b.Start
		}
		return prio(a.Class) - prio(b.Class)
	})
	// Sweep: an overlap keeps the finding of the class that comes first.
	out := ms[:0]
	for _, m := range ms {
		if n := len(out); n > 0 && m.Start < out[n-1].End {
			if prio(m.Class) < prio(out[n-1].Class) && (n < 2 || m.Start >= out[n-2].End) {
				out[n-1] = m
			}
			continue
		}
		out = append(out, m)
	}
	return out
}

// String returns s with every finding replaced by <CLASS>. Masking can
// free text that an overlap hid: in "010 01 0001 0000 0000 00" the phone
// expression's one match is too long to be a phone and the SSN takes the
// front, so "0000 0000 00" is a phone only once the SSN is a tag. The
// masked text is masked again until nothing more is found (a few passes
// at most; a text with no finding costs one Find, as before), so masking
// a masked text changes nothing (FuzzRedact).
func (r *Redactor) String(s string) string {
	for range maskPasses {
		out := r.mask(s)
		if out == s {
			return s
		}
		s = out
	}
	return s
}

// maskPasses bounds String's passes; each pass after the first masks only
// what the one before freed, which is rarer every time.
const maskPasses = 8

// mask is one pass of String.
func (r *Redactor) mask(s string) string {
	ms := r.Find(s)
	if len(ms) == 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	at := 0
	for _, m := range ms {
		b.WriteString(s[at:m.Start])
		b.WriteByte('<')
		b.WriteString(string(m.Class))
		b.WriteByte('>')
		at = m.End
	}
	b.WriteString(s[at:])
	return b.String()
}
