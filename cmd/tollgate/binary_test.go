package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// testOnlyModules are the modules the main module's tests may import
// although no product package does. Anything else a test needs from a
// third party belongs in the sdktest module (see sdktest/go.mod), so that
// the gateway's module graph carries only what runs.
var testOnlyModules = map[string]string{
	"github.com/alicebob/miniredis/v2": "in-process Redis for the ledger and rate-limit unit tests",
	"github.com/yuin/gopher-lua":       "miniredis's Lua interpreter",
}

// goList lists the modules that provide the packages of the main module
// and their dependencies, with the test packages' imports when test is set.
func goList(t *testing.T, test bool) []string {
	t.Helper()
	args := []string{"list", "-deps", "-f", "{{with .Module}}{{.Path}}{{end}}"}
	if test {
		args = append(args, "-test")
	}
	cmd := exec.Command("go", append(args, "./...")...)
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	mods := strings.Fields(string(out))
	slices.Sort(mods)
	return slices.Compact(mods)
}

// TestNoTestOnlyModules fails when a test of the main module imports a
// third-party module that no product package imports (a browser driver, an
// OpenAPI validator): such tests move to the sdktest module.
func TestNoTestOnlyModules(t *testing.T) {
	product := goList(t, false)
	for _, mod := range goList(t, true) {
		if _, ok := slices.BinarySearch(product, mod); ok {
			continue
		}
		if _, ok := testOnlyModules[mod]; !ok {
			t.Errorf("only tests import %s: move those tests to the sdktest module, which runs the real binary", mod)
		}
	}
}

// TestOnlyUsedVocabulariesLinked checks the binary's symbols: the two BPE
// vocabularies internal/tokens counts with are linked, and the library's
// others (r50k, p50k), megabytes of tables no model uses, are not.
func TestOnlyUsedVocabulariesLinked(t *testing.T) {
	bin := buildBinary(t)
	out, err := exec.Command("go", "tool", "nm", bin).Output()
	if err != nil {
		t.Fatalf("go tool nm: %v", err)
	}
	linked := map[string]bool{}
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) >= 3 {
			linked[f[len(f)-1]] = true
		}
	}
	const codec = "github.com/tiktoken-go/tokenizer/codec."
	tests := []struct {
		symbol string
		want   bool
	}{
		{codec + "cl100kBaseVocabInit", true},
		{codec + "o200kBaseVocabInit", true},
		{codec + "r50kBaseVocabInit", false},
		{codec + "p50kBaseVocabInit", false},
		{codec + "NewP50kEdit", false},
	}
	for _, tt := range tests {
		if linked[tt.symbol] != tt.want {
			t.Errorf("%s linked = %v, want %v", tt.symbol, linked[tt.symbol], tt.want)
		}
	}
}
