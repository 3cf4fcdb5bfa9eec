package provider

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// TestGoogleTokenSourceSignsAndReuses: a service account key (given as JSON
// or as a file path) is exchanged at its token_uri with a signed JWT
// assertion for an access token, which later calls with the same key
// reuse, however they name it; a key file replaced by another key gets
// the new key's token; credentials that are not a key fail at once.
func TestGoogleTokenSourceSignsAndReuses(t *testing.T) {
	var exchanges atomic.Int32
	tokenSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil || r.Form.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" || strings.Count(r.Form.Get("assertion"), ".") != 2 {
			http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
			return
		}
		exchanges.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"ya29.test-token","token_type":"Bearer","expires_in":3600}`))
	}))
	defer tokenSrv.Close()

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	sa, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "p", "private_key_id": "k1", "private_key": string(pemKey),
		"client_email": "svc@p.iam.gserviceaccount.com", "token_uri": tokenSrv.URL,
	})
	file := filepath.Join(t.TempDir(), "sa.json")
	if err := os.WriteFile(file, sa, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, creds := range []string{string(sa), file} {
		ts, err := GoogleTokenSource(context.Background(), creds)
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			tok, err := ts.Token()
			if err != nil || tok.AccessToken != "ya29.test-token" {
				t.Fatalf("token %v %v", tok, err)
			}
		}
	}
	if n := exchanges.Load(); n != 1 {
		t.Fatalf("%d token exchanges for one key (as JSON and as its file) asked six times, want 1", n)
	}
	// The file replaced by another key (a rotation) and read again: the
	// new key's token, not the old one's cached by the path.
	rotated, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "p", "private_key_id": "k2", "private_key": string(pemKey),
		"client_email": "rotated@p.iam.gserviceaccount.com", "token_uri": tokenSrv.URL,
	})
	if err := os.WriteFile(file, rotated, 0o600); err != nil {
		t.Fatal(err)
	}
	ts, err := GoogleTokenSource(context.Background(), file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Token(); err != nil || exchanges.Load() != 2 {
		t.Fatalf("after the key file was replaced: %v, %d exchanges, want 2", err, exchanges.Load())
	}
	if _, err := GoogleTokenSource(context.Background(), `{"type":"service_account"}`); err == nil {
		t.Fatal("a key without a private key was accepted")
	}
	if _, err := GoogleTokenSource(context.Background(), filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Fatal("a missing credentials file was accepted")
	}
}

// TestGoogleCredentialsErrorsHideKeyMaterial: vertex_credentials that are
// neither JSON nor a readable file (a key pasted base64-encoded, JSON in
// quotes) are never quoted in the error, which becomes the reason a
// deployment is disabled, shown to callers; a string that looks like a
// path (short, absolute, relative or a .json name) is named, so an
// operator sees which file is missing.
func TestGoogleCredentialsErrorsHideKeyMaterial(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		creds string
		named bool
	}{
		{"eyJ0eXBlIjoic2VydmljZV9hY2NvdW50IiwicHJpdmF0ZV9rZXkiOiJTRUNSRVQifQ", false},
		{`"{\"type\":\"service_account\",\"private_key\":\"SECRET\"}"`, false},
		{"ab/cd+ef/SECRETSECRET==", false},                // base64 holding '/'
		{"/" + strings.Repeat("k", 600) + ".json", false}, // too long to be a path
		{filepath.Join(dir, "missing.json"), true},
		{"./keys/missing-key", true},
		{"missing-key.json", true},
	} {
		_, err := GoogleTokenSource(context.Background(), tc.creds)
		if err == nil {
			t.Fatalf("%q was accepted", tc.creds)
		}
		msg := err.Error()
		if strings.Contains(msg, tc.creds) != tc.named {
			t.Errorf("%q: named %v, want %v: %s", tc.creds, !tc.named, tc.named, msg)
		}
		if !tc.named && (strings.Contains(msg, "SECRET") || !strings.Contains(msg, "neither a service account JSON nor a readable file")) {
			t.Errorf("%q: %s", tc.creds, msg)
		}
	}
}
