package hooks

import (
	"encoding/json"
	"testing"
)

// TestPythonWholeInts: integer limits a Python hook gives as whole floats
// (pydantic takes them) become integers; anything else whole-number-like
// is left alone, a fraction is refused naming the field (#32).
func TestPythonWholeInts(t *testing.T) {
	tests := []struct {
		in, want, why string
	}{
		{`{"tpm_limit": 1000000.0, "rpm_limit": 100}`, `{"rpm_limit":100,"tpm_limit":1000000}`, ""},
		{`{"rpm_limit": 1e2}`, `{"rpm_limit":100}`, ""},
		{`{"rpm_limit": null, "max_budget": 1.5}`, `{"rpm_limit": null, "max_budget": 1.5}`, ""},
		{`{"tpm_limit": 1.5}`, "", "tpm_limit is 1.5, not a whole number (up to 2^53)"},
		{`{"max_parallel_requests": 1e300}`, "", "max_parallel_requests is 1e300, not a whole number (up to 2^53)"},
	}
	for _, tt := range tests {
		out, why := wholeInts(json.RawMessage(tt.in), "rpm_limit", "tpm_limit", "max_parallel_requests")
		if why != tt.why || (why == "" && string(out) != tt.want) {
			t.Errorf("%s: %s %q, want %s %q", tt.in, out, why, tt.want, tt.why)
		}
	}
}

// TestPythonTruthy: custom_key_generate's decision is Python's truth value.
func TestPythonTruthy(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{`true`, true}, {`1`, true}, {`"no"`, true}, {`[0]`, true}, {`{"a":1}`, true},
		{`null`, false}, {`false`, false}, {`0`, false}, {`0.0`, false}, {`""`, false}, {`[]`, false}, {`{}`, false},
	}
	for _, tt := range tests {
		if got := truthy(json.RawMessage(tt.in)); got != tt.want {
			t.Errorf("truthy(%s) = %v", tt.in, got)
		}
	}
}
