package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// unitDirective is one Key=Value line of a systemd unit.
type unitDirective struct {
	line           int
	section        string
	key, value     string
	continuedLines bool
}

// parseUnit reads a unit file the way systemd does: lines starting with
// # or ; are comments, [Section] headers, Key=Value directives (a trailing
// backslash continues the value). systemd has no inline comments: a # or
// ; later in the line is part of the value.
func parseUnit(text string) ([]unitDirective, error) {
	var out []unitDirective
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	n := 0
	var cont *unitDirective
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if cont != nil {
			v, more := strings.CutSuffix(line, `\`)
			cont.value += " " + strings.TrimSpace(v)
			if !more {
				out = append(out, *cont)
				cont = nil
			}
			continue
		}
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			if !strings.HasSuffix(line, "]") {
				return nil, fmt.Errorf("line %d: bad section header %q", n, line)
			}
			section = line[1 : len(line)-1]
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				return nil, fmt.Errorf("line %d: %q is neither a section, a comment nor Key=Value in a section", n, line)
			}
			d := unitDirective{line: n, section: section, key: strings.TrimSpace(k), value: strings.TrimSpace(v)}
			if v, more := strings.CutSuffix(d.value, `\`); more {
				d.value, d.continuedLines = strings.TrimSpace(v), true
				cont = &d
				continue
			}
			out = append(out, d)
		}
	}
	return out, sc.Err()
}

// inlineComment matches what reads like a comment after a value: systemd
// would take it as part of the value (a path with " # ..." in it).
var inlineComment = regexp.MustCompile(`\s[#;]`)

// lintUnit returns the problems of a unit that DEPLOY.md's readers would
// hit: inline comments, an EnvironmentFile that may silently be skipped,
// and missing hardening.
func lintUnit(text string) []string {
	dirs, err := parseUnit(text)
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	got := map[string]string{}
	for _, d := range dirs {
		if inlineComment.MatchString(d.value) {
			problems = append(problems, fmt.Sprintf("line %d: %s=%q carries an inline comment, which systemd reads as part of the value", d.line, d.key, d.value))
		}
		if d.key == "EnvironmentFile" && strings.HasPrefix(d.value, "-") {
			problems = append(problems, fmt.Sprintf("line %d: EnvironmentFile=%s: the leading - makes a missing file (the master key's) silently ignored", d.line, d.value))
		}
		got[d.section+"."+d.key] = d.value
	}
	for k, want := range map[string]string{
		"Service.ProtectSystem":   "strict",
		"Service.ProtectHome":     "yes",
		"Service.NoNewPrivileges": "yes",
		"Service.PrivateTmp":      "yes",
		"Service.StateDirectory":  "tollgate",
		"Service.KillSignal":      "SIGTERM",
	} {
		if got[k] != want {
			problems = append(problems, fmt.Sprintf("%s=%q, want %q", k, got[k], want))
		}
	}
	if got["Service.EnvironmentFile"] == "" {
		problems = append(problems, "no EnvironmentFile: where do the master key and provider keys come from?")
	}
	if !strings.Contains(got["Service.ExecStart"], " serve ") {
		problems = append(problems, fmt.Sprintf("ExecStart=%q does not run tollgate serve", got["Service.ExecStart"]))
	}
	return problems
}

func TestLintUnitCatchesTheOldDeployMdUnit(t *testing.T) {
	t.Parallel()
	// DEPLOY.md's unit before issue 29: the comment after the path became
	// part of it and the "-" then skipped the file without a word.
	old := "[Service]\nExecStart=/usr/local/bin/tollgate serve --port 4000\n" +
		"EnvironmentFile=-/etc/tollgate/secrets.env   # TOLLGATE_MASTER_KEY, provider keys\n"
	problems := strings.Join(lintUnit(old), "\n")
	for _, want := range []string{"inline comment", "leading -", "ProtectSystem"} {
		if !strings.Contains(problems, want) {
			t.Errorf("lint of the old unit does not mention %q:\n%s", want, problems)
		}
	}
}

// TestSystemdUnit checks deploy/tollgate.service and every ini block of
// DEPLOY.md with lintUnit, then has systemd-analyze verify the unit (with
// ExecStart pointed at a freshly built binary, since verify wants the
// executable to exist) where systemd-analyze is installed.
func TestSystemdUnit(t *testing.T) {
	t.Parallel()
	unit, err := os.ReadFile("../../deploy/tollgate.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range lintUnit(string(unit)) {
		t.Errorf("deploy/tollgate.service: %s", p)
	}
	deploy, err := os.ReadFile("../../DEPLOY.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```ini\n(.*?)```").FindAllStringSubmatch(string(deploy), -1)
	for _, b := range blocks {
		dirs, err := parseUnit(b[1])
		if err != nil || len(dirs) == 0 {
			t.Errorf("DEPLOY.md ini block does not parse as a unit (%v):\n%s", err, b[1])
		}
		for _, d := range dirs {
			if inlineComment.MatchString(d.value) || (d.key == "EnvironmentFile" && strings.HasPrefix(d.value, "-")) {
				t.Errorf("DEPLOY.md: %s=%s would mislead (inline comment or optional EnvironmentFile)", d.key, d.value)
			}
		}
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed: the unit was checked by this test's parser only")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	text := strings.Replace(string(unit), "ExecStart=/usr/local/bin/tollgate ", "ExecStart="+bin+" ", 1)
	if text == string(unit) {
		t.Fatal("ExecStart does not start with /usr/local/bin/tollgate")
	}
	path := filepath.Join(dir, "tollgate.service")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", "--man=no", path).CombinedOutput()
	// verify exits 0 on directives it ignores ("Failed to parse ...,
	// ignoring"); any line about the file is a finding.
	if err != nil || strings.Contains(string(out), "tollgate.service:") {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
