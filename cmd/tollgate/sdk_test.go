package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestOfficialSDKs runs the sdktest module against this binary as part of
// the ordinary test run: the official openai-go, anthropic-sdk-go and npm
// openai clients, the headless-Chromium UI test (browser/) and the check of
// the served OpenAPI document (spec/). The SDKs, the browser driver and the
// OpenAPI validator live in that module's go.mod, not ours.
func TestOfficialSDKs(t *testing.T) {
	t.Parallel() // its own binary process, port, temp dir and store (see TestMain)
	if testing.Short() {
		t.Skip("-short: skipping the SDK module")
	}
	bin := buildBinary(t)
	dir, _ := filepath.Abs("../../sdktest")
	cmd := exec.Command("go", "test", "-count=1", "./...")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TOLLGATE_BIN="+bin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sdktest: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
