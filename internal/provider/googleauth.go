package provider

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
)

// googleScope is the OAuth scope Vertex AI's API takes.
const googleScope = "https://www.googleapis.com/auth/cloud-platform"

// googleSources caches a token source per key, so that every request
// with the same key shares one access token until it expires
// (oauth2.ReuseTokenSource refreshes it shortly before). It is keyed by the
// key's contents, not by how vertex_credentials names it: a key file
// replaced in place (a rotation) is a new entry once the gateway reads it
// again (a reload), not the old account's token.
var googleSources sync.Map // sha256 of the key JSON ("" for default credentials) -> oauth2.TokenSource

// GoogleTokenSource returns the token source for Vertex AI credentials as
// LiteLLM takes them (vertex_credentials): the JSON of a service account or
// authorized user key, or the path of a file holding it; empty means
// Google's application default credentials (GOOGLE_APPLICATION_CREDENTIALS,
// gcloud's, or the metadata server's). Credentials that cannot be read fail
// here, at configuration, not on the first request.
func GoogleTokenSource(ctx context.Context, credentials string) (oauth2.TokenSource, error) {
	js := strings.TrimSpace(credentials)
	if js == "" {
		return cachedSource("", func() (*google.Credentials, error) {
			return google.FindDefaultCredentials(ctx, googleScope)
		})
	}
	key, named, err := googleKeyJSON(js)
	if err != nil {
		return nil, fmt.Errorf("vertex credentials: %w", err)
	}
	sum := sha256.Sum256(key)
	return cachedSource(string(sum[:]), func() (*google.Credentials, error) {
		creds, err := googleKey(ctx, key)
		if err != nil && named != "" {
			err = fmt.Errorf("file %q: %w", named, err)
		}
		return creds, err
	})
}

// cachedSource is googleSources' token source for id, made by read on a
// miss.
func cachedSource(id string, read func() (*google.Credentials, error)) (oauth2.TokenSource, error) {
	if ts, ok := googleSources.Load(id); ok {
		return ts.(oauth2.TokenSource), nil
	}
	creds, err := read()
	if err != nil {
		return nil, fmt.Errorf("vertex credentials: %w", err)
	}
	actual, _ := googleSources.LoadOrStore(id, oauth2.ReuseTokenSource(nil, creds.TokenSource))
	return actual.(oauth2.TokenSource), nil
}

// googleKeyJSON is the key vertex_credentials holds (js, trimmed): its
// JSON, or the contents of the file it names, and then the path when its
// errors may name it (looksLikeKeyPath). Its errors never quote js
// otherwise: a key pasted in a form this gateway does not read (base64,
// JSON in quotes) lands here, and the reason a deployment is disabled is
// shown to callers.
func googleKeyJSON(js string) (key []byte, named string, err error) {
	if strings.HasPrefix(js, "{") {
		return []byte(js), "", nil
	}
	if looksLikeKeyPath(js) {
		named = js
	}
	b, err := os.ReadFile(js)
	if err != nil {
		if named == "" {
			return nil, "", fmt.Errorf("vertex_credentials is neither a service account JSON nor a readable file (%d bytes)", len(js))
		}
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is named below, once
		}
		return nil, "", fmt.Errorf("file %q: %w", named, err)
	}
	return b, named, nil
}

// googleKey reads a service account or authorized user key, checking what
// the library would only find wrong at the first token: a service account
// needs its client_email and a PEM private key, an authorized user its
// refresh token.
func googleKey(ctx context.Context, js []byte) (*google.Credentials, error) {
	var k struct {
		Type         string `json:"type"`
		ClientEmail  string `json:"client_email"`
		PrivateKey   string `json:"private_key"`
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.Unmarshal(js, &k); err != nil {
		return nil, fmt.Errorf("not a JSON key: %w", err)
	}
	switch k.Type {
	case "service_account":
		if b, _ := pem.Decode([]byte(k.PrivateKey)); b == nil || k.ClientEmail == "" {
			return nil, errors.New("a service account key needs client_email and a PEM private_key")
		}
		return google.CredentialsFromJSONWithType(ctx, js, google.ServiceAccount, googleScope)
	case "authorized_user":
		if k.RefreshToken == "" {
			return nil, errors.New("an authorized_user key needs its refresh_token")
		}
		return google.CredentialsFromJSONWithType(ctx, js, google.AuthorizedUser, googleScope)
	}
	return nil, fmt.Errorf("key type %q: want service_account or authorized_user", k.Type)
}

// looksLikeKeyPath tells a file path from key material: short, one line,
// no JSON, and either absolute or relative (/, ./, ../, ~/) or a .json
// file's name. Base64 may hold '/', but rarely at its start.
func looksLikeKeyPath(s string) bool {
	if len(s) >= 512 || strings.ContainsAny(s, "{\"\n\r\t") {
		return false
	}
	for _, prefix := range []string{"/", "./", "../", "~/"} {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return strings.HasSuffix(s, ".json")
}
