// Package auth identifies who is calling: it extracts the presented key,
// hashes it, and resolves it to a Principal without touching the database.
package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strings"
)

// Principal is the identity a request acts as.
type Principal struct {
	Master  bool   // the master key: every permission
	KeyHash string // sha256 hex of the presented key; "" when no key was needed
}

// ExtractKey returns the key presented on r, from Authorization: Bearer,
// x-api-key (Anthropic clients) or api-key (Azure clients), in that order.
func ExtractKey(r *http.Request) string {
	if v := r.Header.Get("Authorization"); v != "" {
		if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
			return strings.TrimSpace(v[7:])
		}
		return strings.TrimSpace(v)
	}
	if v := r.Header.Get("x-api-key"); v != "" {
		return strings.TrimSpace(v)
	}
	return strings.TrimSpace(r.Header.Get("api-key"))
}

// Hash is the sha256 of a raw key: the only form in which a key is kept.
func Hash(raw string) [32]byte { return sha256.Sum256([]byte(raw)) }

// HashHex is Hash as lower-case hex, the `token` of LiteLLM's API.
func HashHex(raw string) string {
	h := Hash(raw)
	return hex.EncodeToString(h[:])
}

// Abbreviate is the display form of a key, "sk-...ABCD".
func Abbreviate(raw string) string {
	if len(raw) <= 4 {
		return "sk-..."
	}
	return "sk-..." + raw[len(raw)-4:]
}

// Authenticator resolves presented keys. With no master key configured the
// gateway is open: requests without a key are served anonymously.
type Authenticator struct {
	master    [32]byte
	hasMaster bool
}

// NewAuthenticator returns an Authenticator for masterKey ("" for none).
func NewAuthenticator(masterKey string) *Authenticator {
	a := &Authenticator{}
	if masterKey != "" {
		a.master, a.hasMaster = Hash(masterKey), true
	}
	return a
}

// Open reports whether the gateway accepts requests without a key.
func (a *Authenticator) Open() bool { return !a.hasMaster }

// ErrNoKey and ErrInvalidKey are the two ways authentication fails.
var (
	ErrNoKey      = authError("no API key: pass it as Authorization: Bearer <key>, x-api-key or api-key")
	ErrInvalidKey = authError("invalid API key")
)

type authError string

func (e authError) Error() string { return string(e) }

// Authenticate resolves the key on r. The comparison with the master key is
// on sha256 digests in constant time.
func (a *Authenticator) Authenticate(r *http.Request) (*Principal, error) {
	raw := ExtractKey(r)
	if raw == "" {
		if a.Open() {
			return &Principal{}, nil
		}
		return nil, ErrNoKey
	}
	h := Hash(raw)
	if a.hasMaster && subtle.ConstantTimeCompare(h[:], a.master[:]) == 1 {
		return &Principal{Master: true, KeyHash: hex.EncodeToString(h[:])}, nil
	}
	if a.Open() {
		return &Principal{KeyHash: hex.EncodeToString(h[:])}, nil
	}
	return nil, ErrInvalidKey
}
