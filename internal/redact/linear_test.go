package redact

import (
	"math/rand/v2"
	"regexp"
	"runtime"
	"slices"
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
// the CPU time this thread spends (not wall time: on a busy machine time
// spent waiting for a core is not counted), best of several runs, with a
// wide margin (under 9), so the test does not depend on the machine's
// speed or load; a quadratic detector lands near 16.
func TestDetectorsAreLinear(t *testing.T) {
	r := all(t)
	runtime.LockOSThread() // the thread's clock must be this goroutine's
	defer runtime.UnlockOSThread()
	best := func(s string) time.Duration {
		d := time.Hour
		for range 7 {
			start := threadCPU(t)
			r.String(s)
			d = min(d, threadCPU(t)-start)
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

// TestCardRunsMatchTheExpression: cardRuns finds what the expression it
// replaces found, on random runs of digits, spaces and dashes.
func TestCardRunsMatchTheExpression(t *testing.T) {
	re := regexp.MustCompile(`\d(?:[ \-]?\d){12,18}`)
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := "0123456789012345678901234567 -- x"
	for range 20000 {
		b := make([]byte, rng.IntN(60))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		w := string(b)
		var got [][]int
		cardRuns(w, func(a, b int) { got = append(got, []int{a, b}) })
		if want := re.FindAllStringIndex(w, -1); !slices.EqualFunc(got, want, slices.Equal) {
			t.Fatalf("%q: %v, want %v", w, got, want)
		}
	}
}

// TestIBANShapeMatchesTheExpression: ibanShape finds what the expression
// it replaces found, on random text starting with two letters and two
// digits.
func TestIBANShapeMatchesTheExpression(t *testing.T) {
	re := regexp.MustCompile(`^[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?`)
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := "ABZ0123456789    x"
	for range 20000 {
		b := []byte("DE89")
		for range rng.IntN(50) {
			b = append(b, alphabet[rng.IntN(len(alphabet))])
		}
		s := string(b)
		got, want := ibanShape(s, 0), re.FindStringIndex(s[:min(len(s), 48)])
		if !slices.Equal(got, want) {
			t.Fatalf("%q: %v, want %v", s, got, want)
		}
	}
}
