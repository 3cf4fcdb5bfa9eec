package config

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
)

// EnvString is a string that may refer to the environment: LiteLLM's
// `os.environ/NAME` or agentgateway's `$NAME` / `${NAME}`. It is resolved
// while the file is read; an unset variable resolves to "" with a warning.
type EnvString string

// UnmarshalYAML resolves environment references.
func (s *EnvString) UnmarshalYAML(ctx context.Context, node ast.Node) error {
	var raw string
	if _, ok := node.(*ast.NullNode); ok {
		*s = ""
		return nil
	}
	if err := yaml.NodeToValue(node, &raw); err != nil {
		return err
	}
	name, ok := envRef(raw)
	if !ok {
		*s = EnvString(raw)
		return nil
	}
	v, set := os.LookupEnv(name)
	if !set {
		warn(ctx, node, fmt.Sprintf("environment variable %s is not set; %q resolves to an empty string", name, raw))
	}
	*s = EnvString(v)
	return nil
}

// envRef returns the variable a value refers to, if it is a reference.
func envRef(v string) (string, bool) {
	if name, ok := strings.CutPrefix(v, "os.environ/"); ok && name != "" {
		return name, true
	}
	if name, ok := strings.CutPrefix(v, "${"); ok && strings.HasSuffix(name, "}") && len(name) > 1 {
		return name[:len(name)-1], true
	}
	if name, ok := strings.CutPrefix(v, "$"); ok && name != "" && isEnvName(name) {
		return name, true
	}
	return "", false
}

func isEnvName(s string) bool {
	for i, c := range s {
		ok := c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (i > 0 && c >= '0' && c <= '9')
		if !ok {
			return false
		}
	}
	return true
}

// Seconds is a duration written as a number of seconds (LiteLLM's timeout: 0.5).
type Seconds time.Duration

// UnmarshalYAML reads a number of seconds, or a Go duration string ("30s").
func (s *Seconds) UnmarshalYAML(node ast.Node) error {
	var f float64
	if err := yaml.NodeToValue(node, &f); err == nil {
		*s = Seconds(time.Duration(f * float64(time.Second)))
		return nil
	}
	var str string
	if err := yaml.NodeToValue(node, &str); err != nil {
		return fmt.Errorf("want a number of seconds")
	}
	d, err := time.ParseDuration(str)
	if err != nil {
		return fmt.Errorf("want a number of seconds or a duration like 30s, got %q", str)
	}
	*s = Seconds(d)
	return nil
}

// Duration is a Go-style duration ("60s", "86400s", "1h").
type Duration time.Duration

// UnmarshalYAML reads a Go duration string, or a bare number of seconds.
func (d *Duration) UnmarshalYAML(node ast.Node) error {
	var str string
	if err := yaml.NodeToValue(node, &str); err == nil {
		if v, err := time.ParseDuration(str); err == nil {
			*d = Duration(v)
			return nil
		}
	}
	var f float64
	if err := yaml.NodeToValue(node, &f); err == nil {
		*d = Duration(time.Duration(f * float64(time.Second)))
		return nil
	}
	return fmt.Errorf("want a duration like 60s, got %s", node.String())
}

type warningsKey struct{}

type warnings struct {
	name string
	list []string
}

func warn(ctx context.Context, node ast.Node, msg string) {
	w, _ := ctx.Value(warningsKey{}).(*warnings)
	if w == nil {
		return
	}
	pos := node.GetToken().Position
	w.list = append(w.list, fmt.Sprintf("%s:%d:%d: %s", w.name, pos.Line, pos.Column, msg))
}

// VertexCredentials is LiteLLM's vertex_credentials: a service account key
// as a path, as its JSON text (both may be os.environ/ references), or as
// a YAML object; kept as the path or the JSON text.
type VertexCredentials string

// UnmarshalYAML takes a string (resolving environment references) or an
// object (kept as JSON).
func (v *VertexCredentials) UnmarshalYAML(ctx context.Context, node ast.Node) error {
	if _, ok := node.(*ast.MappingNode); ok {
		var m map[string]any
		if err := yaml.NodeToValue(node, &m); err != nil {
			return err
		}
		b, err := json.Marshal(m)
		if err != nil {
			return err
		}
		*v = VertexCredentials(b)
		return nil
	}
	var s EnvString
	if err := s.UnmarshalYAML(ctx, node); err != nil {
		return err
	}
	*v = VertexCredentials(s)
	return nil
}
