package gateway

import (
	"net/http"
	"testing"
)

// TestLimitHeaderKeysAreCanonical: the rate-limit headers set by map
// assignment are in the form net/http's Get and Set use, so a client and
// a later Set see one header, not two.
func TestLimitHeaderKeysAreCanonical(t *testing.T) {
	for _, ks := range limitHeaderKeys {
		for _, k := range ks {
			if c := http.CanonicalHeaderKey(k); c != k {
				t.Errorf("%q is not canonical (%q)", k, c)
			}
		}
	}
}
