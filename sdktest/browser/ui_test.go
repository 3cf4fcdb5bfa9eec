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

// browser is one headless Chromium tab on the gateway, with the helpers
// the flows use. Every wait is for a condition, bounded generously.
type browser struct {
	t    *testing.T
	ctx  context.Context
	base string
	dir  string
}

// step runs actions within a minute; on failure it saves failed.png and
// reports the page's text.
func (b *browser) step(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	sctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(sctx, steps...); err != nil {
		b.fatalf("browser, %s: %v", what, err)
	}
}

func (b *browser) fatalf(format string, args ...any) {
	b.t.Helper()
	body, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100)); err == nil {
		_ = os.WriteFile(filepath.Join(b.dir, "failed.png"), png, 0o644)
	}
	b.t.Fatalf(format+"\npage text:\n%s", append(args, body)...)
}

// js evaluates expr and returns its value.
func js[T any](b *browser, expr string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.fatalf("browser, evaluating %.80s: %v", expr, err)
	}
	return v
}

// until polls the JavaScript condition expr (every 50 ms, up to a minute).
func (b *browser) until(what, expr string) {
	b.t.Helper()
	for deadline := time.Now().Add(time.Minute); ; {
		ok, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`!!(`+expr+`)`))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			b.fatalf("browser, waiting for %s (%s): %v", what, expr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	return js[string](b, fmt.Sprintf(`(document.querySelector(%q) || {innerText: ""}).innerText`, sel))
}

// choose sets a select (or input) to value as a user would and fires its change event.
func (b *browser) choose(sel, value string) {
	b.t.Helper()
	if !js[bool](b, fmt.Sprintf(`(() => { const e = document.querySelector(%q); if (!e) return false; e.value = %q;
		e.dispatchEvent(new Event("input", {bubbles: true})); e.dispatchEvent(new Event("change", {bubbles: true})); return e.value === %q; })()`, sel, value, value)) {
		b.fatalf("browser: cannot set %s to %q", sel, value)
	}
}

func (b *browser) shot(name string) {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(b.dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot %s", path)
}

// open goes to a page of the UI by its menu entry and waits for ready.
func (b *browser) open(page, ready string) {
	b.t.Helper()
	b.step("open "+page, chromedp.Click("#nav-"+page), chromedp.WaitVisible(ready))
}

func (b *browser) signIn(key, ready string) {
	b.t.Helper()
	b.step("sign in", chromedp.WaitVisible("#login-key"), chromedp.SendKeys("#login-key", key), chromedp.Click("#login-button"), chromedp.WaitVisible(ready))
}

func (b *browser) signOut() {
	b.t.Helper()
	b.step("sign out", chromedp.Click("#logout"), chromedp.WaitVisible("#login-key"))
}

// jsonString is s as a JSON string.
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// apiCall sends a management or inference request with key and decodes the answer.
func apiCall(t *testing.T, method, url, key, body string, header map[string]string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		_ = json.Unmarshal(b, out)
	}
	return resp.StatusCode
}

// TestUIEndToEnd drives headless Chromium through the admin's flows (sign
// in; create a key with a budget in the short form, see it once with a
// copy button and by its alias in the list; spend from calls through the
// demo model in the chart by key alias, by team, model and tag; the
// request log filtered, a request's detail; an audit entry's before/after
// diff; the overview), an internal user's (only her keys, spend and
// requests; no admin menu; an admin page's URL says why it is refused, and
// the server refuses it too), a viewer's read-only view and the API docs
// page. Every page's screenshot goes to $TOLLGATE_ARTIFACTS/ui.
func TestUIEndToEnd(t *testing.T) {
	chrome := chromium(t)
	work := t.TempDir()
	bin, err := harness.Binary(work)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := harness.Start(bin, work, func(upstream string) string {
		return fmt.Sprintf(`model_list:
  - model_name: demo
    litellm_params: {model: demo/demo, input_cost_per_token: 0.001, output_cost_per_token: 0.002}
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4o, api_base: %[1]q, input_cost_per_token: 0.00001, output_cost_per_token: 0.00002}
  - model_name: flaky
    litellm_params: {model: openai/flaky, api_base: %[1]q, extra_headers: {x-mock-status: "503"}}
router_settings:
  allowed_fails: 0
  cooldown_time: 600
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
	base := gw.URL
	const master = "sk-ui-master"

	// A team and an internal user with a key of her own, made over the API.
	if s := apiCall(t, "POST", base+"/team/new", master, `{"team_id": "t-research", "team_alias": "Research"}`, nil, nil); s != 200 {
		t.Fatalf("team/new: %d", s)
	}
	// Names an admin or a user chose, holding markup: the UI must show
	// them as text, never build elements from them.
	const hostile = `<b id=xss-probe>x</b><img src=x onerror=alert(1)>`
	if s := apiCall(t, "POST", base+"/team/new", master, `{"team_id": "t-hostile", "team_alias": `+jsonString(hostile)+`}`, nil, nil); s != 200 {
		t.Fatalf("team/new (hostile alias): %d", s)
	}
	if s := apiCall(t, "POST", base+"/user/new", master, `{"user_id": "u-hostile", "user_alias": `+jsonString(hostile)+`, "user_email": "h@example.com", "teams": ["t-hostile"]}`, nil, nil); s != 200 {
		t.Fatalf("user/new (hostile alias): %d", s)
	}
	var ada struct{ Key string }
	if s := apiCall(t, "POST", base+"/user/new", master, `{"user_id": "u-ada", "user_email": "ada@example.com", "user_role": "internal_user"}`, nil, &ada); s != 200 {
		t.Fatalf("user/new: %d", s)
	}
	var adaKey struct{ Key string }
	if s := apiCall(t, "POST", base+"/key/generate", master, `{"key_alias": "ada-laptop", "user_id": "u-ada", "models": ["demo"]}`, nil, &adaKey); s != 200 {
		t.Fatalf("key/generate for ada: %d", s)
	}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.Headless,
		chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900))
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	bctx, cancelTimeout := context.WithTimeout(bctx, 3*time.Minute)
	defer cancelTimeout()
	b := &browser{t: t, ctx: bctx, base: base, dir: artifacts(t)}

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

	// ---- the admin ----
	b.step("open the UI", chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible("#login-key"))
	b.shot("01-login")
	b.signIn(master, "#ov-today")
	if !js[bool](b, `!!document.querySelector("#admin-menu #nav-audit")`) {
		b.fatalf("the admin sees no admin menu")
	}
	b.open("keys", "#key-form")
	// The short form: the common fields are shown, the rest folded away.
	if js[bool](b, `document.querySelector("#key-advanced").open || document.querySelector("#f-rpm_limit").checkVisibility()`) {
		b.fatalf("the key form shows its advanced fields unasked")
	}
	for _, f := range []string{"key_alias", "models", "max_budget", "budget_duration", "team_id", "user_id", "duration"} {
		if !js[bool](b, `document.querySelector("#f-`+f+`").checkVisibility()`) {
			b.fatalf("the key form's short part has no visible %s", f)
		}
	}
	b.step("open the advanced fields", chromedp.Click("#key-advanced summary"), chromedp.WaitVisible("#f-rpm_limit"))
	// A checkbox sits on its label's line: their vertical centres within 3 px.
	if off := js[float64](b, `(() => { const l = document.querySelector("#f-blocked").closest("label");
		const c = document.querySelector("#f-blocked").getBoundingClientRect(), s = l.querySelector("span").getBoundingClientRect();
		return Math.abs((c.top + c.bottom) / 2 - (s.top + s.bottom) / 2); })()`); off > 3 {
		b.fatalf("the checkbox is %.1f px off its label's line", off)
	}
	b.shot("02-key-form-advanced")
	b.step("close the advanced fields", chromedp.Click("#key-advanced summary"))
	b.until("the advanced fields folded", `!document.querySelector("#f-rpm_limit").checkVisibility()`)
	b.step("fill the key form", chromedp.SendKeys("#f-key_alias", "billing-bot"), chromedp.SendKeys("#f-max_budget", "5"), chromedp.SendKeys("#f-models", "demo, gpt-4, flaky"))
	b.choose("#f-budget_duration", "30d")
	b.choose("#f-team_id", "t-research")
	b.step("create the key", chromedp.Click("#create-key"), chromedp.WaitVisible("#new-key-value"))
	rawKey := b.text("#new-key-value")
	if !strings.HasPrefix(rawKey, "sk-") {
		b.fatalf("the form showed %q as the new key", rawKey)
	}
	b.step("copy the key", chromedp.Click("#copy-key"))
	b.until("the copy to be confirmed", `document.querySelector("#copy-status").innerText.startsWith("Copied")`)
	b.until("the new key in the list by its alias", `document.querySelector('tr.key-row[data-alias="billing-bot"]')`)
	if row := b.text(`tr.key-row[data-alias="billing-bot"]`); !strings.Contains(row, "Research") || !strings.Contains(row, "/ $5.00") || !strings.Contains(row, "30d") {
		t.Errorf("the key's row %q lacks its team's alias, budget or period", row)
	}
	b.shot("03-key-created")
	// Shown once: the page opened again no longer holds it.
	b.step("reopen the keys page", chromedp.Navigate(base+"/ui/#overview"), chromedp.WaitVisible("#ov-today"), chromedp.Click("#nav-keys"), chromedp.WaitVisible("#key-list table"))
	if strings.Contains(js[string](b, `document.body.innerText`), rawKey) {
		b.fatalf("the raw key is still on the page after leaving it")
	}

	// Calls through the demo model (tagged), one through gpt-4 with an
	// e-mail address (masked by the guardrail), one that fails upstream,
	// and one of ada's.
	for i, c := range []struct {
		key, model, tags string
		want             int
	}{{rawKey, "demo", "browser-tag", 200}, {rawKey, "demo", "browser-tag", 200}, {rawKey, "demo", "", 200}, {rawKey, "gpt-4", "", 200}, {rawKey, "flaky", "", 503}, {adaKey.Key, "demo", "", 200}} {
		h := map[string]string{}
		if c.tags != "" {
			h["x-litellm-tags"] = c.tags
		}
		body := fmt.Sprintf(`{"model":%q,"max_tokens":10,"user":"end-user-%d","messages":[{"role":"user","content":"call %d from the browser test, mail ui@example.com"}]}`, c.model, i%2, i)
		if s := apiCall(t, "POST", base+"/v1/chat/completions", c.key, body, h, nil); s != c.want {
			t.Fatalf("call %d (%s): %d, want %d", i, c.model, s, c.want)
		}
	}
	// The spend writer lands the rows within about 100 ms; wait for all
	// six (the upstream's error leaves a failure row), ada's, the last,
	// included: the overview below names both keys.
	for deadline := time.Now().Add(30 * time.Second); ; {
		var rows []map[string]any
		apiCall(t, "GET", base+"/spend/logs", master, "", nil, &rows)
		if len(rows) >= 6 {
			break
		}
		if time.Now().After(deadline) {
			seen := []string{}
			for _, r := range rows {
				seen = append(seen, fmt.Sprint(r["model_group"], " ", r["http_status"]))
			}
			t.Fatalf("spend rows: %d of 6 after 30 s: %v", len(rows), seen)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// An audit entry with a before and an after: the budget raised.
	var info struct {
		Info struct {
			Token string `json:"token"`
		} `json:"info"`
	}
	apiCall(t, "GET", base+"/key/info?key="+rawKey, master, "", nil, &info)
	if s := apiCall(t, "POST", base+"/key/update", master, `{"key": "`+rawKey+`", "max_budget": 7}`, nil, nil); s != 200 {
		t.Fatalf("key/update: %d", s)
	}

	b.open("overview", "#ov-today")
	b.until("the overview's spend", `!document.querySelector("#ov-today .big").innerText.startsWith("$0.000000")`)
	// The overview's cards load each on its own: wait for the ones read below
	// to have content (their text is then checked as before).
	for _, card := range []string{"#top-keys", "#ov-errors", "#budget-burn", "#ov-cool"} {
		b.until("the overview's "+card, fmt.Sprintf(`document.querySelector(%q) && document.querySelector(%q).innerText.trim() !== ""`, card, card))
	}
	if top := b.text("#top-keys"); !strings.Contains(top, "billing-bot") || !strings.Contains(top, "ada-laptop") {
		t.Errorf("top keys %q do not name the keys by alias", top)
	}
	if e := b.text("#ov-errors"); !strings.Contains(e, "1 failed of 6") {
		t.Errorf("error rate card %q", e)
	}
	if burn := b.text("#budget-burn"); !strings.Contains(burn, "billing-bot") {
		t.Errorf("budget burn %q does not list the key with a budget", burn)
	}
	// The deployment that failed cools down (allowed_fails: 0).
	if cool := b.text("#ov-cool"); !strings.Contains(cool, "flaky") || !strings.Contains(cool, "cooling down until") {
		t.Errorf("cooldowns: %q", cool)
	}
	b.shot("04-overview")

	b.open("spend", "#spend-group")
	b.until("the chart by key", `document.querySelector("#spend-out .legend") && document.querySelector("#spend-out .legend").innerText.includes("billing-bot")`)
	if js[bool](b, `document.querySelector("#spend-out .legend").innerText.includes("key ")`) {
		t.Errorf("the legend names a key by its hash: %q", b.text("#spend-out .legend"))
	}
	if ticks := js[int](b, `document.querySelectorAll("#spend-out svg text.tick").length`); ticks < 6 {
		t.Errorf("the chart has %d axis labels", ticks)
	}
	// Hover a bar: the tooltip names the key and the value.
	x := js[float64](b, `(() => { const r = document.querySelector("#spend-out rect.bar-rect").getBoundingClientRect(); return r.left + r.width / 2; })()`)
	y := js[float64](b, `(() => { const r = document.querySelector("#spend-out rect.bar-rect").getBoundingClientRect(); return r.top + r.height / 2; })()`)
	b.step("hover a bar", chromedp.MouseEvent("mouseMoved", x, y))
	b.until("the tooltip", `!document.querySelector("#chart-tooltip").hidden && document.querySelector("#chart-tooltip").innerText.includes(": $")`)
	if tip := b.text("#chart-tooltip"); !strings.Contains(tip, "billing-bot") && !strings.Contains(tip, "ada-laptop") {
		t.Errorf("tooltip %q names no key alias", tip)
	}
	b.shot("05-spend-by-key")
	for _, g := range []struct{ group, want string }{{"team", "Research"}, {"model", "demo"}, {"tag", "browser-tag"}, {"user", "ada@example.com"}, {"end_user", "end-user-1"}} {
		b.choose("#spend-group", g.group)
		b.until("the chart by "+g.group, `document.querySelector("#top-spenders") && document.querySelector("#top-spenders").innerText.includes(`+fmt.Sprintf("%q", g.want)+`)`)
	}
	// A date range with no spend shows an empty chart, not an error.
	b.choose("#spend-from", "2020-01-01")
	b.choose("#spend-to", "2020-01-07")
	b.until("the empty range", `document.querySelector("#range-spend") && document.querySelector("#range-spend").innerText.includes("$0.000000")`)
	b.step("back to this month", chromedp.Click(`#spend-toolbar button:nth-of-type(3)`))
	b.until("this month's spend", `document.querySelector("#range-spend") && !document.querySelector("#range-spend").innerText.includes("$0.000000")`)
	b.choose("#spend-group", "model")
	b.until("the chart by model", `document.querySelector("#top-spenders").innerText.includes("demo")`)
	if tags := b.text("#tag-spend"); !strings.Contains(tags, "browser-tag") {
		t.Errorf("spend by tag %q does not show the request's tag", tags)
	}
	b.shot("06-spend-by-model")

	b.open("logs", "#log-filters")
	// Six requests: five answered, and flaky's 503 (a failure row, spend 0).
	b.until("the request log", `document.querySelectorAll("tr.log-row").length === 6`)
	if keys := b.text("#page table tbody"); strings.Contains(keys, info.Info.Token[:8]) || !strings.Contains(keys, "billing-bot") {
		t.Errorf("the request log does not name keys by alias: %q", keys)
	}
	b.choose("#flt-model", "gpt-4")
	b.until("the gpt-4 rows", `document.querySelectorAll("tr.log-row").length === 1`)
	if g := b.text("td.guardrails"); g != "pii-mask: masked (EMAIL_ADDRESS×1)" {
		t.Errorf("request log guardrails %q", g)
	}
	b.choose("#flt-model", "")
	b.choose("#flt-status", "failure")
	b.until("the failed row", `document.querySelectorAll("tr.log-row").length === 1 && document.querySelector("tr.log-row").innerText.includes("flaky")`)
	if row := b.text("tr.log-row"); !strings.Contains(row, "flaky") || !strings.Contains(row, "503") || !strings.Contains(row, "$0.000000") {
		t.Errorf("the failed request's row %q does not show flaky, 503 and no cost", row)
	}
	b.choose("#flt-status", "success")
	b.until("the successful rows", `document.querySelectorAll("tr.log-row").length === 5`)
	b.choose("#flt-status", "")
	b.choose("#flt-key", info.Info.Token)
	// Every row billing-bot's: the table of the filters before (five
	// successful rows) must not pass for it while it is redrawn.
	b.until("billing-bot's rows", `document.querySelectorAll("tr.log-row").length === 5 && [...document.querySelectorAll("tr.log-row")].every(r => r.innerText.includes("billing-bot"))`)
	b.step("open a request's detail", chromedp.Click(`tr.log-row`), chromedp.WaitVisible("#log-detail"))
	if d := b.text("#log-detail"); !strings.Contains(d, "billing-bot") || !strings.Contains(d, "Research") {
		t.Errorf("request detail %q lacks the key's alias or the team's", d)
	}
	b.shot("07-logs-detail")

	b.open("audit", "#page table")
	b.until("the key's update in the audit log", `[...document.querySelectorAll("tr.audit-row")].some(r => r.innerText.includes("updated") && r.innerText.includes("key billing-bot"))`)
	b.step("open the update's diff", chromedp.Click(`tr.audit-row details.audit-diff summary`))
	b.until("the diff", `[...document.querySelectorAll("table.diff tr")].some(r => r.innerText.includes("max_budget"))`)
	if d := js[string](b, `[...document.querySelectorAll("table.diff tr")].find(r => r.innerText.includes("max_budget")).innerText`); !strings.Contains(d, "5") || !strings.Contains(d, "7") {
		t.Errorf("the audit diff's max_budget row %q is not 5 → 7", d)
	}
	b.shot("08-audit-diff")

	// Regenerate shows the new key once, in the page with a copy button
	// (not in an alert), and the old key stops working.
	var rotate struct{ Key string }
	if code := apiCall(t, "POST", base+"/key/generate", master, `{"key_alias": "rotate-me"}`, nil, &rotate); code != 200 {
		t.Fatalf("generate rotate-me: %d", code)
	}
	b.open("keys", `tr.key-row[data-alias="rotate-me"]`)
	b.step("regenerate rotate-me", chromedp.Evaluate[chromedp.Void](`[...document.querySelectorAll('tr.key-row[data-alias="rotate-me"] button')].find(x => x.innerText === "Regenerate").click()`))
	b.until("the regenerated key shown once", `document.querySelector("#key-banner #new-key-value") && document.querySelector("#key-banner #copy-key")`)
	if got := b.text("#key-banner #new-key-value"); !strings.HasPrefix(got, "sk-") || got == rotate.Key {
		t.Errorf("regenerated key shown as %q (old %q)", got, rotate.Key)
	} else {
		if code := apiCall(t, "GET", base+"/key/info", got, "", nil, nil); code != 200 {
			t.Errorf("the regenerated key: /key/info %d", code)
		}
		if code := apiCall(t, "GET", base+"/key/info", rotate.Key, "", nil, nil); code != 401 {
			t.Errorf("the old key after regenerate: /key/info %d, want 401", code)
		}
	}
	for _, p := range []struct{ page, ready, shot string }{
		{"users", "#user-form", "09-users"}, {"teams", "#page table", "10-teams"}, {"customers", "#page table", "11-end-users"},
		{"models", "#page table", "12-models"}, {"guardrails", "#page table tbody tr td", "13-guardrails"},
	} {
		b.open(p.page, p.ready)
		b.until(p.page+" loaded", `document.querySelector("#page table tbody")`)
		b.shot(p.shot)
		if js[bool](b, `!!document.querySelector("#xss-probe, #page img")`) {
			t.Errorf("%s page: a hostile alias became markup", p.page)
		}
	}
	if list := b.text("#page table"); !strings.Contains(list, "pii-mask") || !strings.Contains(list, "inactive (kind not served)") {
		t.Errorf("guardrails page %q", list)
	}
	// The hostile team's alias is shown as the text it is.
	b.open("teams", "#page table")
	b.until("the hostile team listed", `document.querySelector("#page table").innerText.includes("<b id=xss-probe>")`)
	b.signOut()

	// ---- an internal user: only her own, no admin menu ----
	b.signIn(ada.Key, "#ov-today")
	if js[bool](b, `!!document.querySelector("#admin-menu, #nav-audit, #nav-users")`) {
		b.fatalf("the internal user sees the admin menu")
	}
	if who := b.text("#whoami"); !strings.Contains(who, "ada@example.com") || !strings.Contains(who, "internal_user") {
		t.Errorf("whoami %q", who)
	}
	b.until("her spend on the overview", `document.querySelector("#top-keys").innerText.includes("ada-laptop")`)
	if top := b.text("#top-keys"); strings.Contains(top, "billing-bot") {
		t.Errorf("the internal user's overview shows another's key: %q", top)
	}
	b.shot("14-user-overview")
	b.open("keys", "#key-list table")
	if list := b.text("#key-list"); !strings.Contains(list, "ada-laptop") || strings.Contains(list, "billing-bot") || strings.Contains(list, "u-ada") {
		t.Errorf("the internal user's keys %q", list)
	}
	b.shot("15-user-keys")
	b.open("spend", "#spend-group")
	b.until("her chart", `document.querySelector("#spend-out .legend") && document.querySelector("#spend-out .legend").innerText.includes("ada-laptop")`)
	if legend := b.text("#spend-out .legend"); strings.Contains(legend, "billing-bot") {
		t.Errorf("the internal user's chart shows another's key: %q", legend)
	}
	if groups := js[string](b, `[...document.querySelectorAll("#spend-group option")].map(o => o.value).join(" ")`); groups != "api_key model" {
		t.Errorf("the internal user may group by %q", groups)
	}
	b.shot("16-user-spend")
	b.open("logs", "#log-filters")
	b.until("her request", `document.querySelectorAll("tr.log-row").length === 1`)
	if rows := b.text("#page table tbody"); !strings.Contains(rows, "ada-laptop") {
		t.Errorf("the internal user's request log %q", rows)
	}
	b.shot("17-user-logs")
	b.step("open the audit log by its URL", chromedp.Navigate(base+"/ui/#audit"), chromedp.WaitVisible("#forbidden"))
	if msg := b.text("#forbidden"); !strings.Contains(msg, "for admins") || !strings.Contains(msg, "internal_user") {
		t.Errorf("the refusal %q does not say why", msg)
	}
	b.shot("18-user-admin-url")
	// The server refuses it too, not just the page.
	for _, path := range []string{"/audit/list", "/global/spend/report", "/user/list", "/spend/tags"} {
		if s := apiCall(t, "GET", base+path, ada.Key, "", nil, nil); s != 403 {
			t.Errorf("GET %s as the internal user: %d, want 403", path, s)
		}
	}
	var others []map[string]any
	apiCall(t, "GET", base+"/spend/logs?api_key="+rawKey, ada.Key, "", nil, &others)
	if len(others) != 0 {
		t.Errorf("/spend/logs as the internal user, asking for another's key: %v", others)
	}
	b.signOut()

	// ---- a viewer sees everything and can change nothing ----
	var viewer struct{ Key string }
	apiCall(t, "POST", base+"/user/new", master, `{"user_id": "viewer-1", "user_role": "proxy_admin_viewer"}`, nil, &viewer)
	b.signIn(viewer.Key, "#ov-today")
	b.open("keys", `tr.key-row[data-alias="billing-bot"]`)
	who := b.text("#whoami")
	if buttons := js[int](b, `document.querySelectorAll("#key-form, #page button").length`); !strings.Contains(who, "read only") || buttons != 0 {
		t.Errorf("viewer: whoami %q, %d forms and buttons", who, buttons)
	}
	b.shot("19-viewer-keys")

	// The API docs page renders the document and sends a request.
	b.step("open the docs page", chromedp.Navigate(base+"/docs"), chromedp.WaitVisible(chromedp.CSS("#ops details summary")))
	b.step("send a request from the docs page", chromedp.Click(chromedp.CSS("#ops details summary")),
		chromedp.Click(chromedp.CSS("#ops details button")), chromedp.WaitVisible(chromedp.CSS("#ops details pre")))
	// The page shows "…" until the answer arrives; wait for the answer.
	b.until("the docs page's answer", `document.querySelector("#ops details pre").innerText !== "…"`)
	if out := b.text("#ops details pre"); !strings.HasPrefix(out, "200 ") {
		t.Errorf("the docs page's request: %.100q", out)
	}
	b.shot("20-docs")
}
