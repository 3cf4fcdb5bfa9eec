package admin

import (
	"math"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/ledger"
)

// Input limits. The ledger counts money as int64 nano-dollars, which hold
// at most ±9.2e9 USD, and sums spend and holds of many requests in that
// range; a budget, a spend or a per-model budget above maxUSD is refused.
// Rate limits above maxRate are no limit anyone means, and keep the rate
// limiters' arithmetic far from overflow. Durations (key expiry,
// budget_duration) are at most a century: beyond, times overflow what the
// store can write (year 9999) and what time.Duration can count.
const (
	maxUSD  = 1e9
	maxRate = 1e12
	// maxPeriodDays bounds a duration: 100 years and a bit.
	maxPeriodDays = 36600
)

// checkUSD refuses a negative or out-of-range amount of money.
func checkUSD(field string, v float64) error {
	switch {
	case math.IsNaN(v) || v < 0:
		return apierror.BadRequest(field, "%s must not be negative, got %v", field, v)
	case v > maxUSD:
		return apierror.BadRequest(field, "%s must be at most %.0f USD, got %v", field, float64(maxUSD), v)
	}
	return nil
}

// checkRate refuses a negative or out-of-range limit.
func checkRate(field string, v int64) error {
	switch {
	case v < 0:
		return apierror.BadRequest(field, "%s must not be negative, got %d", field, v)
	case v > maxRate:
		return apierror.BadRequest(field, "%s must be at most %.0f, got %d", field, float64(maxRate), v)
	}
	return nil
}

// checkPeriod parses a LiteLLM duration and refuses one longer than a
// century.
func checkPeriod(field, s string) (ledger.Period, error) {
	per, err := ledger.ParsePeriod(s)
	if err != nil {
		return per, apierror.BadRequest(field, "%s: %v", field, err)
	}
	perUnit := map[string]int{"s": maxPeriodDays * 86400, "m": maxPeriodDays * 1440, "h": maxPeriodDays * 24,
		"d": maxPeriodDays, "w": maxPeriodDays / 7, "mo": 1200, "y": 100}
	if max, ok := perUnit[per.Unit]; !ok || per.N > max {
		return per, apierror.BadRequest(field, "%s %q is too long: at most 100 years (36600d, 5228w, 1200mo, 100y)", field, s)
	}
	return per, nil
}
