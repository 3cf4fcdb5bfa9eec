package sdktest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestNodeOpenAI runs node/test.mjs, the npm openai client through the same
// scenarios, against the shared gateway. It installs the locked package with
// npm ci when node_modules is missing. Without Node the test is skipped with
// a message (the CI machine has it).
func TestNodeOpenAI(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: skipping the npm openai client run")
	}
	dir, _ := filepath.Abs("node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "openai")); err != nil {
		npm := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		npm.Dir = dir
		if out, err := npm.CombinedOutput(); err != nil {
			t.Fatalf("npm ci: %v\n%s", err, out)
		}
	}
	// The Go scenarios may have spent the rpm-1 key's minute already; the
	// script tolerates that. Give it fresh keys where order matters.
	rpm1, err := generate(`{"rpm_limit": 1}`)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, "test.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TOLLGATE_URL="+gw.url, "KEY_ALL="+gw.keys["all"], "KEY_GPT4="+gw.keys["gpt4"],
		"KEY_RPM1="+rpm1, "KEY_NOBUDGET="+gw.keys["nobudge"])
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node openai client: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
