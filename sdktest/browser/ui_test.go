// Package browser drives the admin UI of a real tollgate process with
// headless Chromium. It lives in the sdktest module so that the browser
// driver stays out of the gateway's go.mod; cmd/tollgate TestOfficialSDKs
// runs it with the rest of the module.
package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tollgate/tollgate/sdktest/internal/harness"
)

func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no Chromium on this machine: skipping the browser test (.ci/run installs Debian's chromium)")
	return ""
}

// artifacts is where screenshots go: $TOLLGATE_ARTIFACTS/ui, else a temp dir.
func artifacts(t *testing.T) string {
	dir := t.TempDir()
	if base := os.Getenv("TOLLGATE_ARTIFACTS"); base != "" {
		dir = filepath.Join(base, "ui")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestUIEndToEnd drives headless Chromium: sign in with the master key,
// create a key in the form, use that key for a chat request through the
// API, and see its spend appear on the keys page and in the spend charts.
func TestUIEndToEnd(t *testing.T) {
	browser := chromium(t)
	work := t.TempDir()
	bin, err := harness.Binary(work)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := harness.Start(bin, work, func(upstream string) string {
		return fmt.Sprintf(`model_list:
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4o, api_base: %q, input_cost_per_token: 0.00001, output_cost_per_token: 0.00002}
general_settings:
  master_key: sk-ui-master
guardrails:
  - guardrail_name: pii-mask
    litellm_params: {guardrail: litellm_pii, mode: pre_call, default_on: true}
  - guardrail_name: vendor
    litellm_params: {guardrail: aporia, mode: post_call}
`, upstream)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Stop()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	base := gw.URL

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.Headless,
		chromedp.DisableGPU, chromedp.WindowSize(1280, 900))
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	bctx, cancelTimeout := context.WithTimeout(bctx, 90*time.Second)
	defer cancelTimeout()
	dir := artifacts(t)
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		path := filepath.Join(dir, name+".png")
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot %s", path)
	}
	step := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(bctx, 20*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, steps...); err != nil {
			body, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`document.body.innerText + "\ninputs: " + [...document.querySelectorAll("#key-form input")].map(i => i.name + "=" + i.value).join(" ")`))
			if png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)); err == nil {
				_ = os.WriteFile(filepath.Join(dir, "failed.png"), png, 0o644)
			}
			t.Fatalf("browser, %s: %v\npage text:\n%s", what, err, body)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Text(sel))
		if err != nil {
			t.Fatalf("browser, reading %s: %v", sel, err)
		}
		return s
	}

	// The first action starts the browser on bctx itself: a step's timeout
	// context must not own the tab.
	if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	// Every console message is kept: a Content-Security-Policy violation
	// (the pages run under a strict policy) or an uncaught exception fails
	// the test at the end.
	var (
		consoleMu sync.Mutex
		console   []chromedp.ConsoleMessage
	)
	cctx, stopConsole := context.WithCancel(bctx)
	messages := chromedp.Console(cctx)
	consoleDone := make(chan struct{})
	go func() {
		defer close(consoleDone)
		for m, err := range messages {
			if err != nil {
				return
			}
			consoleMu.Lock()
			console = append(console, m)
			consoleMu.Unlock()
		}
	}()
	defer func() {
		stopConsole()
		<-consoleDone
		for _, m := range console {
			text := strings.ToLower(m.Text)
			if m.IsException() || m.Source == "security" || strings.Contains(text, "content security policy") || strings.Contains(text, "refused to") {
				t.Errorf("browser console, %s (%s): %s", m.Type, m.URL, m.Text)
			} else {
				t.Logf("browser console, %s: %s", m.Type, m.Text)
			}
		}
	}()
	step("open the UI", chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible("#login-key"))
	shot("1-login")
	step("sign in", chromedp.SendKeys("#login-key", "sk-ui-master"), chromedp.Click("#login-button"), chromedp.WaitVisible("#key-form"))
	// Fill the form's fields as a user would type them, then press its button.
	if _, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`(() => {
		const set = (id, v) => { const e = document.getElementById(id); e.value = v; e.dispatchEvent(new Event("input", {bubbles: true})); };
		set("f-key_alias", "ui-made-key"); set("f-max_budget", "5"); set("f-models", "gpt-4"); set("f-rpm_limit", "100");
		set("f-metadata", '{"team": "browser-test"}');
		return true;
	})()`)); err != nil {
		t.Fatalf("fill the key form: %v", err)
	}
	step("create the key", chromedp.Click("#create-key"), chromedp.WaitVisible("#new-key-value"))
	rawKey := text("#new-key-value")
	shot("2-key-created")
	if !strings.HasPrefix(rawKey, "sk-") {
		t.Fatalf("the form showed %q as the new key", rawKey)
	}

	// Use the key through the API.
	req, _ := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-4","max_tokens":10,"messages":[{"role":"user","content":"hello from the browser test, mail ui@example.com"}]}`))
	req.Header.Set("Authorization", "Bearer "+rawKey)
	req.Header.Set("x-litellm-tags", "browser-tag")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("x-tollgate-response-cost") == "" {
		t.Fatalf("chat with the UI's key: %d", resp.StatusCode)
	}

	// Its spend shows on the keys page (the writer lands it within 100 ms).
	cell := `tr.key-row[data-alias="ui-made-key"] td.spend`
	var spend string
	deadline := time.Now().Add(10 * time.Second)
	for {
		step("reload the keys page", chromedp.Navigate(base+"/ui/#keys"), chromedp.Reload(), chromedp.WaitVisible(cell))
		spend = text(cell)
		if !strings.HasPrefix(spend, "$0.000000 ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the key's spend never appeared in the UI: %q", spend)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(spend, "/ $5.00") {
		t.Errorf("spend cell %q does not show the budget", spend)
	}
	shot("3-key-spend")
	step("open the spend page", chromedp.Click("#nav-spend"), chromedp.WaitVisible("#total-spend"), chromedp.WaitVisible("svg rect"))
	if total := text("#total-spend"); strings.Contains(total, "$0.000000") {
		t.Errorf("total spend %q", total)
	}
	step("see spend by tag", chromedp.WaitVisible("#tag-spend"))
	if tags := text("#tag-spend"); !strings.Contains(tags, "browser-tag") {
		t.Errorf("spend by tag %q does not show the request's tag", tags)
	}
	shot("4-spend")
	step("open the request logs", chromedp.Click("#nav-logs"), chromedp.WaitVisible("table tbody tr td code"), chromedp.WaitVisible("td.tags"))
	if tags := text("td.tags"); tags != "browser-tag" {
		t.Errorf("request log tags %q", tags)
	}
	if g := text("td.guardrails"); g != "pii-mask: masked (EMAIL_ADDRESS×1)" {
		t.Errorf("request log guardrails %q", g)
	}
	shot("5-logs")
	step("open the guardrails page", chromedp.Click("#nav-guardrails"), chromedp.WaitVisible("#page table tbody tr td"))
	if list := text("#page table"); !strings.Contains(list, "pii-mask") || !strings.Contains(list, "inactive (kind not served)") {
		t.Errorf("guardrails page %q", list)
	}
	shot("5b-guardrails")

	// A viewer sees everything and can change nothing: no forms, no buttons.
	req, _ = http.NewRequest("POST", base+"/user/new", strings.NewReader(`{"user_id": "viewer-1", "user_role": "proxy_admin_viewer"}`))
	req.Header.Set("Authorization", "Bearer sk-ui-master")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var viewer struct{ Key string }
	json.NewDecoder(resp.Body).Decode(&viewer)
	resp.Body.Close()
	step("sign out", chromedp.Click("#logout"), chromedp.WaitVisible("#login-key"))
	step("sign in as a viewer", chromedp.SendKeys("#login-key", viewer.Key), chromedp.Click("#login-button"), chromedp.WaitVisible(cell))
	who := text("#whoami")
	buttons, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll("#key-form, #page button").length`))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(who, "read only") || buttons != 0 {
		t.Errorf("viewer: whoami %q, %d forms and buttons", who, buttons)
	}
	shot("6-viewer")

	// The API docs page renders the document and sends a request.
	step("open the docs page", chromedp.Navigate(base+"/docs"), chromedp.WaitVisible(chromedp.CSS("#ops details summary")))
	step("send a request from the docs page", chromedp.Click(chromedp.CSS("#ops details summary")),
		chromedp.Click(chromedp.CSS("#ops details button")), chromedp.WaitVisible(chromedp.CSS("#ops details pre")))
	// The page shows "…" until the answer arrives; wait for the answer.
	out, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("#ops details pre")))
	for deadline := time.Now().Add(20 * time.Second); err == nil && out == "…" && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		out, err = chromedp.Run(bctx, chromedp.Text(chromedp.CSS("#ops details pre")))
	}
	if err != nil || !strings.HasPrefix(out, "200 ") {
		t.Errorf("the docs page's request: %.100q, %v", out, err)
	}
	shot("7-docs")
}
