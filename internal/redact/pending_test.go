package redact

import "testing"

func TestPending(t *testing.T) {
	t.Parallel()
	tests := []struct {
		s    string
		want string // the tail held back
	}{
		{"Sure, here it is. ", ""},
		{"Sure, here it is", ""},
		{"the end.", ""},
		{"write to jane.doe@exa", "jane.doe@exa"},
		{"write to jane@", "jane@"},
		{"card 4111 1111 11", "4111 1111 11"},
		{"card 4111-1111-", "4111-1111-"},
		{"card 4111 1111 ", "4111 1111 "},
		{"Authorization: Bearer ", "Bearer "},
		{"I have 3 cats ", ""},
		{"call +1 (555) 12", "+1 (555) 12"},
		{"IBAN DE89 3704 00", "DE89 3704 00"},
		{"key sk", "sk"},
		{"key sk-proj-abc", "sk-proj-abc"},
		{"use AIz", "AIz"},
		{"use s", "s"},
		{"so ", ""},
		{"Authorization: Bearer eyJhbGci", "Bearer eyJhbGci"},
		{"Authorization: Bea", "Bea"},
		{"ip 10.0.0.", "10.0.0."},
		{"version v2", "v2"},
	}
	for _, tt := range tests {
		n := Pending(tt.s)
		if got := tt.s[len(tt.s)-n:]; got != tt.want {
			t.Errorf("Pending(%q) holds %q, want %q", tt.s, got, tt.want)
		}
	}
	long := "x sk-" + string(repeat('a', 400))
	if n := Pending(long); n > MaxPending {
		t.Errorf("Pending held %d bytes, above MaxPending %d", n, MaxPending)
	}
}

func repeat(b byte, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}

// TestPendingLocal: the end of a text that could be an e-mail address's
// local part, its '@' still to come, is held; a space, a sentence's end
// or a run longer than a local part is not.
func TestPendingLocal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		s    string
		want string
	}{
		{"Mail jane", "jane"},
		{"Mail jane.doe", "jane.doe"},
		{"Mail jane_doe+tag", "jane_doe+tag"},
		{"Sure, here it is. ", ""},
		{"the end.", ""},
		{"well,", ""},
		{"x " + string(repeat('a', 70)), ""},
		{"", ""},
	}
	for _, tt := range tests {
		n := PendingLocal(tt.s)
		if got := tt.s[len(tt.s)-n:]; got != tt.want {
			t.Errorf("PendingLocal(%q) holds %q, want %q", tt.s, got, tt.want)
		}
	}
}
