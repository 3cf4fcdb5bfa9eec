package ledger

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Period is a LiteLLM duration such as "30s", "20m", "30min", "1h", "1d",
// "1w", "1mo" or "1y".
type Period struct {
	N    int
	Unit string // s, m, h, d, w, mo, y
}

// ParsePeriod reads a LiteLLM duration string.
func ParsePeriod(s string) (Period, error) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	n, err := strconv.Atoi(s[:i])
	if err != nil || n <= 0 {
		return Period{}, fmt.Errorf("invalid duration %q: want a positive number and a unit (s, m, h, d, w, mo), e.g. 30d", s)
	}
	unit := s[i:]
	switch unit {
	case "s", "sec", "secs", "second", "seconds":
		unit = "s"
	case "m", "min", "mins", "minute", "minutes":
		unit = "m"
	case "h", "hr", "hrs", "hour", "hours":
		unit = "h"
	case "d", "day", "days":
		unit = "d"
	case "w", "week", "weeks":
		unit = "w"
	case "mo", "month", "months":
		unit = "mo"
	case "y", "year", "years":
		unit = "y"
	default:
		return Period{}, fmt.Errorf("invalid duration %q: unknown unit %q (use s, m, h, d, w, mo)", s, unit)
	}
	if n > maxPeriod[unit] {
		// Longer periods overflow time arithmetic (a key would be created
		// already expired) and mean nothing for a budget or an expiry.
		return Period{}, fmt.Errorf("invalid duration %q: longer than %d years", s, maxYears)
	}
	return Period{N: n, Unit: unit}, nil
}

// maxYears bounds a period; maxPeriod is that bound in each unit.
const maxYears = 100

var maxPeriod = map[string]int{
	"s": maxYears * 366 * 86400, "m": maxYears * 366 * 1440, "h": maxYears * 366 * 24,
	"d": maxYears * 366, "w": maxYears * 53, "mo": maxYears * 12, "y": maxYears,
}

// After is t plus the period (for key expiry: not calendar-aligned).
func (p Period) After(t time.Time) time.Time {
	switch p.Unit {
	case "s":
		return t.Add(time.Duration(p.N) * time.Second)
	case "m":
		return t.Add(time.Duration(p.N) * time.Minute)
	case "h":
		return t.Add(time.Duration(p.N) * time.Hour)
	case "d":
		return t.AddDate(0, 0, p.N)
	case "w":
		return t.AddDate(0, 0, 7*p.N)
	case "mo":
		return t.AddDate(0, p.N, 0)
	default:
		return t.AddDate(p.N, 0, 0)
	}
}

// Approx is the period's length, for comparing periods (upper bounds).
func (p Period) Approx() time.Duration {
	base := time.Time{}
	return p.After(base).Sub(base)
}

// NextReset is the next budget reset strictly after now, aligned to the
// calendar in UTC: seconds, minutes and hours to the start of the unit, days
// to midnight, weeks to Monday midnight, months to the 1st, years to 1 Jan.
// "1d" resets at the next midnight; "2d" at the second midnight from now.
func (p Period) NextReset(now time.Time) time.Time {
	now = now.UTC()
	y, mo, d := now.Date()
	switch p.Unit {
	case "s":
		return now.Truncate(time.Second).Add(time.Duration(p.N) * time.Second)
	case "m":
		return now.Truncate(time.Minute).Add(time.Duration(p.N) * time.Minute)
	case "h":
		return now.Truncate(time.Hour).Add(time.Duration(p.N) * time.Hour)
	case "d":
		return time.Date(y, mo, d+p.N, 0, 0, 0, 0, time.UTC)
	case "w":
		daysSinceMonday := (int(now.Weekday()) + 6) % 7
		return time.Date(y, mo, d-daysSinceMonday+7*p.N, 0, 0, 0, 0, time.UTC)
	case "mo":
		return time.Date(y, mo+time.Month(p.N), 1, 0, 0, 0, 0, time.UTC)
	default:
		return time.Date(y+p.N, 1, 1, 0, 0, 0, 0, time.UTC)
	}
}
