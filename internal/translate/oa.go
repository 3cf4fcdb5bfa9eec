package translate

import (
	"encoding/json"
	"fmt"
)

// Readers of the members of an OpenAI chat request that every translation
// to another provider's body reads the same way.

// oaStop reads stop: a string or a list of strings; nil when absent.
func oaStop(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, fmt.Errorf("stop must be a string or a list of strings")
	}
	return many, nil
}

// oaFormat reads response_format: its type (json_object, json_schema, text;
// "" when absent) and, for json_schema, the schema.
func oaFormat(raw json.RawMessage) (kind string, schema json.RawMessage, err error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil, nil
	}
	var f struct {
		Type       string `json:"type"`
		JSONSchema struct {
			Schema json.RawMessage `json:"schema"`
		} `json:"json_schema"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		return "", nil, fmt.Errorf("response_format must be an object")
	}
	return f.Type, f.JSONSchema.Schema, nil
}

// oaParts reads a message's content as parts: a string is one text part
// (none when empty), null or absent none.
func oaParts(content json.RawMessage) ([]oaPart, error) {
	if len(content) == 0 || string(content) == "null" {
		return nil, nil
	}
	var s string
	if json.Unmarshal(content, &s) == nil {
		if s == "" {
			return nil, nil
		}
		return []oaPart{{Type: "text", Text: s}}, nil
	}
	var parts []oaPart
	if err := json.Unmarshal(content, &parts); err != nil {
		return nil, fmt.Errorf("content must be a string or an array of parts")
	}
	return parts, nil
}

// oaErrorType is OpenAI's error type for an upstream's error status, for
// providers whose errors name no type OpenAI's clients know.
func oaErrorType(status int) string {
	switch {
	case status == 401 || status == 403:
		return "authentication_error"
	case status == 404:
		return "not_found_error"
	case status == 429:
		return "rate_limit_error"
	case status >= 500:
		return "api_error"
	}
	return "invalid_request_error"
}
