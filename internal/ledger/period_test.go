package ledger

import (
	"testing"
	"time"
)

func TestPeriods(t *testing.T) {
	now := time.Date(2026, 11, 23, 15, 4, 5, 0, time.UTC) // a Monday
	tests := []struct {
		in               string
		after, nextReset time.Time
	}{
		{"30s", now.Add(30 * time.Second), now.Add(30 * time.Second)},
		{"20m", now.Add(20 * time.Minute), time.Date(2026, 11, 23, 15, 24, 0, 0, time.UTC)},
		{"30min", now.Add(30 * time.Minute), time.Date(2026, 11, 23, 15, 34, 0, 0, time.UTC)},
		{"1h", now.Add(time.Hour), time.Date(2026, 11, 23, 16, 0, 0, 0, time.UTC)},
		{"1d", now.AddDate(0, 0, 1), time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)},
		{"30d", now.AddDate(0, 0, 30), time.Date(2026, 12, 23, 0, 0, 0, 0, time.UTC)},
		{"1w", now.AddDate(0, 0, 7), time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)},
		{"1mo", now.AddDate(0, 1, 0), time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)},
		{"2mo", now.AddDate(0, 2, 0), time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		p, err := ParsePeriod(tt.in)
		if err != nil {
			t.Fatalf("%s: %v", tt.in, err)
		}
		if got := p.After(now); !got.Equal(tt.after) {
			t.Errorf("%s: After = %v, want %v", tt.in, got, tt.after)
		}
		if got := p.NextReset(now); !got.Equal(tt.nextReset) {
			t.Errorf("%s: NextReset = %v, want %v", tt.in, got, tt.nextReset)
		}
	}
	for _, bad := range []string{"", "d", "0d", "-1d", "5x", "1.5h", "30 days ago", "9223372037s", "101y", "36700d"} {
		if _, err := ParsePeriod(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
