package redact

import (
	"strings"
	"testing"
	"time"
)

// adversarial are inputs that make a detector that rescans from each
// candidate start quadratic: JWT look-alikes glued by '-', PEM BEGIN lines
// without END, IBAN-shaped groups, and runs for the other detectors.
var adversarial = map[string]string{
	"jwt":        "eyJ-",
	"jwt dots":   "eyJaaaaaaaa.",
	"pem":        "-----BEGIN RSA PRIVATE KEY----- ",
	"pem public": "-----BEGIN PUBLIC KEY----- ",
	"iban":       "DE89 3704 ",
	"sk":         "sk-a",
	"bearer":     "Bearer ",
	"email":      "a.b@",
	"digits":     "1-2 ",
	"ipv6":       "1:2:",
	"aws":        "AKIAAAAAAAAAAAAAAAAA ",
	"escape":     `\nsk-`,
}

// TestDetectorsAreLinear: masking 64 KiB of each adversarial pattern costs
// about four times what 16 KiB costs, not sixteen. Measured as a ratio of
// the best of several runs, with a wide margin (under 9), so that a busy
// machine slows both sides alike and the test does not depend on the
// machine's speed; a quadratic detector lands near 16.
func TestDetectorsAreLinear(t *testing.T) {
	r := all(t)
	best := func(s string) time.Duration {
		d := time.Hour
		for range 7 {
			start := time.Now()
			r.String(s)
			d = min(d, time.Since(start))
		}
		return max(d, time.Microsecond)
	}
	for name, unit := range adversarial {
		small := strings.Repeat(unit, (16<<10)/len(unit))
		large := strings.Repeat(unit, (64<<10)/len(unit))
		var ratio float64
		for try := 0; try < 3; try++ { // a scheduling hiccup on one side is retried
			ratio = float64(best(large)) / float64(best(small))
			if ratio < 9 {
				break
			}
		}
		if ratio >= 9 {
			t.Errorf("%s: 64 KiB costs %.1f times 16 KiB: not linear", name, ratio)
		}
	}
}
