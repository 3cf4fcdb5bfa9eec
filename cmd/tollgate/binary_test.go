package main

import (
	"os/exec"
	"strings"
	"testing"
)

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
