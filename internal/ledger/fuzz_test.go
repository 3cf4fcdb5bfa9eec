package ledger

import (
	"testing"
	"time"
)

// FuzzParsePeriod: any duration string is refused or gives a period that
// ends after it starts: an expiry in the future and a next reset after now.
func FuzzParsePeriod(f *testing.F) {
	for _, s := range []string{"30s", "20m", "30min", "1h", "1d", "30d", "1w", "1mo", "2mo", "1y", " 7 days", "0d", "-1d", "1.5h", "99999999999999999999s"} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 23, 15, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePeriod(s)
		if err != nil {
			return
		}
		if after := p.After(now); !after.After(now) {
			t.Fatalf("%q: After(%v) = %v, not later", s, now, after)
		}
		if next := p.NextReset(now); !next.After(now) {
			t.Fatalf("%q: NextReset(%v) = %v, not later", s, now, next)
		}
		if p.Approx() <= 0 {
			t.Fatalf("%q: Approx = %v", s, p.Approx())
		}
	})
}
