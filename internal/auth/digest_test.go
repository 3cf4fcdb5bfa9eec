package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/store"
)

// oldDigestOf is digestOf as it was before parseDigest (a validation
// pass, then hex.Decode), kept as the reference parseDigest must equal.
func oldDigestOf(h string) (sum [32]byte, lower bool) {
	if len(h) != 64 {
		return sum, false
	}
	lower = true
	for i := 0; i < 64; i++ {
		c := h[i]
		switch {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f':
		case 'A' <= c && c <= 'F':
			lower = false
		default:
			return sum, false
		}
	}
	hex.Decode(sum[:], []byte(h))
	return sum, lower
}

// refIsDigest is isDigest as it was before it ran parseDigest (a loop of
// its own over the 64 bytes), kept as the independent reference both
// parseDigest's ok and isDigest must equal.
func refIsDigest(h string) bool {
	if len(h) != 64 {
		return false
	}
	for i := 0; i < 64; i++ {
		c := h[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// TestParseDigestMatchesHexDecode: for every byte value at every position
// of a digest (lower and upper case), for mixed case, for other lengths
// and for random strings, parseDigest gives the old digestOf's digest and
// case, and ok (and isDigest) exactly when refIsDigest says so.
func TestParseDigestMatchesHexDecode(t *testing.T) {
	check := func(h string) {
		t.Helper()
		sum, lower, ok := parseDigest(h)
		wantSum, wantLower := oldDigestOf(h)
		wantOK := refIsDigest(h)
		if sum != wantSum || lower != wantLower || ok != wantOK {
			t.Fatalf("parseDigest(%q) = %x, %v, %v; want %x, %v, %v", h, sum, lower, ok, wantSum, wantLower, wantOK)
		}
		if got := isDigest(h); got != wantOK {
			t.Fatalf("isDigest(%q) = %v, want %v", h, got, wantOK)
		}
		if s, l := digestOf(h); s != wantSum || l != wantLower {
			t.Fatalf("digestOf(%q) = %x, %v; want %x, %v", h, s, l, wantSum, wantLower)
		}
	}
	d := sha256.Sum256([]byte("sk-test"))
	base := hex.EncodeToString(d[:])
	for _, h := range []string{base, strings.ToUpper(base), strings.Repeat("0", 64), strings.Repeat("f", 64), strings.Repeat("F", 64), strings.Repeat("9", 64)} {
		check(h)
		for i := 0; i < 64; i++ {
			for c := 0; c < 256; c++ {
				b := []byte(h)
				b[i] = byte(c)
				check(string(b))
			}
		}
	}
	for n := 0; n < 130; n++ {
		check(base[:min(n, 64)] + strings.Repeat("a", max(n-64, 0)))
	}
	r := rand.New(rand.NewPCG(1, 2))
	const digits = "0123456789abcdefABCDEF"
	for range 200_000 {
		b := make([]byte, 64)
		for i := range b {
			b[i] = digits[r.IntN(len(digits))]
		}
		if r.IntN(4) == 0 {
			b[r.IntN(64)] = byte(r.IntN(256))
		}
		check(string(b))
	}
}

// TestRecFindsDigestsExactly: the metadata look-up by token hash (the
// budget enforcement mode's, on every budgeted request) finds a key by
// its hash as stored, and not by the same digest in another case.
func TestRecFindsDigestsExactly(t *testing.T) {
	s := NewSnapshot(nil)
	d := sha256.Sum256([]byte("sk-rec"))
	h := hex.EncodeToString(d[:])
	s.PutKey(keyWithMetadata(h, "strict"))
	if md, ok := s.KeyMetadata(h); !ok || md["budget_enforcement"] != "strict" {
		t.Fatalf("KeyMetadata(%s) = %v, %v", h, md, ok)
	}
	if _, ok := s.KeyMetadata(strings.ToUpper(h)); ok {
		t.Fatalf("KeyMetadata found the upper-case form of a lower-case hash")
	}
	up := strings.ToUpper(hex.EncodeToString(sha256.New().Sum(nil)))
	s.PutKey(keyWithMetadata(up, "default"))
	if md, ok := s.KeyMetadata(up); !ok || md["budget_enforcement"] != "default" {
		t.Fatalf("KeyMetadata(%s) = %v, %v", up, md, ok)
	}
	if _, ok := s.KeyMetadata(strings.ToLower(up)); ok {
		t.Fatalf("KeyMetadata found the lower-case form of an upper-case hash")
	}
	s.PutKey(keyWithMetadata("named-key", "strict"))
	if _, ok := s.KeyMetadata("named-key"); !ok {
		t.Fatalf("KeyMetadata(named-key) not found")
	}
}

func keyWithMetadata(hash, mode string) *store.Key {
	return &store.Key{TokenHash: hash, Metadata: map[string]any{"budget_enforcement": mode}}
}
