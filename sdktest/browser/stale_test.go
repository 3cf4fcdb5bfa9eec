package browser

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/tollgate/tollgate/sdktest/internal/harness"
)

// holdFetch runs in every document before app.js (CDP's
// addScriptToEvaluateOnNewDocument; the page's CSP does not apply to it).
// It wraps fetch so that a test can hold one answer back:
//
//	__tg.arm(match, watch) holds the next request whose URL contains match:
//	  its answer is read from the server (__tg.answered) but handed to the
//	  page only on __tg.release(); __tg.consumed is set once the page has
//	  read that body and every promise continuation queued on it has run
//	  (a timer after the read: the microtasks drain first).
//	watch() is a snapshot of what the test looks at; every change of it
//	after arm is pushed on __tg.seen (a MutationObserver), so a wrong
//	render that a later one replaced is still seen.
const holdFetch = `window.__tg = (() => {
  const realFetch = window.fetch.bind(window);
  const t = { match: "", url: "", answered: false, consumed: false, seen: [], watch: null, last: "" };
  let open = () => {}, gate = Promise.resolve();
  t.arm = (match, watch) => {
    Object.assign(t, { match, url: "", answered: false, consumed: false, seen: [], watch, last: watch() });
    gate = new Promise(r => { open = r; });
  };
  t.release = () => open();
  window.fetch = async (input, init) => {
    const url = String(input instanceof Request ? input.url : input);
    if (!t.match || t.url || !url.includes(t.match)) return realFetch(input, init);
    t.url = url;
    const held = gate;
    const resp = await realFetch(input, init);
    const body = await resp.text();
    t.answered = true;
    await held;
    const r = new Response(body, { status: resp.status, statusText: resp.statusText, headers: resp.headers });
    const read = (p) => p.then(v => { setTimeout(() => { t.consumed = true; }); return v; });
    r.text = () => read(Response.prototype.text.call(r));
    r.json = () => read(Response.prototype.json.call(r));
    return r;
  };
  new MutationObserver(() => {
    if (!t.watch) return;
    const now = t.watch();
    if (now !== t.last) { t.seen.push(now); t.last = now; }
  }).observe(document, { subtree: true, childList: true, characterData: true });
  return t;
})();`

// TestUIStaleAnswersNeverRender pins the order that TestUIEndToEnd hits
// only when a race goes one way: two choices in a row send two requests,
// and the first one's answer arrives after the second one's page was
// drawn. The spend page (From, then To) and the request log's pager (one
// key filter, then another) must keep showing the second choice, never
// the first one's numbers or rows, not even for a moment.
func TestUIStaleAnswersNeverRender(t *testing.T) {
	chrome := chromium(t)
	work := t.TempDir()
	bin, err := harness.Binary(work)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := harness.Start(bin, work, func(string) string {
		return `model_list:
  - model_name: demo
    litellm_params: {model: demo/demo, input_cost_per_token: 0.001, output_cost_per_token: 0.002}
general_settings:
  master_key: sk-stale-master
`
	})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Stop()
	base := gw.URL
	const master = "sk-stale-master"

	// Two keys with calls of today: the first with two, the second with one.
	tokens := map[string]string{}
	for alias, calls := range map[string]int{"first-key": 2, "second-key": 1} {
		var k struct{ Key string }
		if s := apiCall(t, "POST", base+"/key/generate", master, `{"key_alias": "`+alias+`"}`, nil, &k); s != 200 {
			t.Fatalf("key/generate %s: %d", alias, s)
		}
		var info struct {
			Info struct {
				Token string `json:"token"`
			} `json:"info"`
		}
		apiCall(t, "GET", base+"/key/info?key="+k.Key, master, "", nil, &info)
		if len(info.Info.Token) != 64 {
			t.Fatalf("key/info %s: token %q", alias, info.Info.Token)
		}
		tokens[alias] = info.Info.Token
		for i := range calls {
			body := fmt.Sprintf(`{"model":"demo","max_tokens":10,"messages":[{"role":"user","content":"call %d of %s"}]}`, i, alias)
			if s := apiCall(t, "POST", base+"/v1/chat/completions", k.Key, body, nil, nil); s != 200 {
				t.Fatalf("call %d of %s: %d", i, alias, s)
			}
		}
	}
	for deadline := time.Now().Add(time.Minute); ; {
		var rows []map[string]any
		apiCall(t, "GET", base+"/spend/logs", master, "", nil, &rows)
		if len(rows) >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("spend rows: %d of 3 after a minute", len(rows))
		}
		time.Sleep(50 * time.Millisecond)
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
	bctx, cancelTimeout := context.WithTimeout(bctx, 5*time.Minute)
	defer cancelTimeout()
	b := &browser{t: t, ctx: bctx, base: base, dir: artifacts(t)}
	if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	if _, err := chromedp.Call(bctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: holdFetch}); err != nil {
		t.Fatalf("install the fetch wrapper: %v", err)
	}
	b.step("open the UI", chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible("#login-key"))
	if !js[bool](b, `!!window.__tg`) {
		b.fatalf("the fetch wrapper did not run before the page")
	}
	b.signIn(master, "#ov-today")

	// held runs first (whose request is held back), waits for the second
	// choice's page (then), releases the first answer and waits until the
	// page has read it; it returns what the watch saw change since arm.
	held := func(what, match, watch string, first, then func()) []string {
		t.Helper()
		js[bool](b, fmt.Sprintf(`(__tg.arm(%q, %s), true)`, match, watch))
		first()
		b.until(what+": the first request sent and held", `__tg.url !== ""`)
		then()
		b.until(what+": the first request answered by the server", `__tg.answered`)
		js[bool](b, `(__tg.release(), true)`)
		b.until(what+": the first answer read by the page", `__tg.consumed`)
		t.Logf("%s: held %s", what, js[string](b, `__tg.url`))
		return js[[]string](b, `__tg.seen`)
	}

	// ---- the spend page: From, then To ----
	b.open("spend", "#spend-group")
	b.until("this range's spend", `document.querySelector("#range-spend") && !document.querySelector("#range-spend").innerText.includes("$0.000000")`)
	to := js[string](b, `document.querySelector("#spend-to").value`)
	const want = "Spend 2020-01-01 to 2020-01-07: $0.000000"
	seen := held("spend", "start_date=2020-01-01&end_date="+to, `() => (document.querySelector("#range-spend") || {textContent: ""}).textContent`,
		func() { b.choose("#spend-from", "2020-01-01") },
		func() {
			b.choose("#spend-to", "2020-01-07")
			b.until("the second range drawn", `document.querySelector("#range-spend") && document.querySelector("#range-spend").innerText.includes("to 2020-01-07")`)
		})
	if got := b.text("#range-spend"); got != want {
		t.Errorf("the spend page shows %q after the first range's late answer, want %q", got, want)
	}
	if top := b.text("#top-spenders"); strings.Contains(top, "first-key") || strings.Contains(top, "second-key") {
		t.Errorf("the empty range's top spenders %q hold the first range's keys", top)
	}
	for _, s := range seen {
		if s != "" && s != want {
			t.Errorf("the spend page showed %q on the way (seen %q)", s, seen)
		}
	}

	// ---- the request log: one key's filter, then another's ----
	b.open("logs", "#log-filters")
	b.until("the request log", `document.querySelectorAll("tr.log-row").length === 3`)
	const rowKeys = `() => [...document.querySelectorAll("tr.log-row")].map(r => r.cells[1].textContent).join(",")`
	seen = held("logs", "api_key="+tokens["first-key"], rowKeys,
		func() { b.choose("#flt-key", tokens["first-key"]) },
		func() {
			b.choose("#flt-key", tokens["second-key"])
			b.until("the second key's rows", "("+rowKeys+`)() === "second-key"`)
		})
	if got := js[string](b, "("+rowKeys+")()"); got != "second-key" {
		b.fatalf("the request log shows rows of %q after the first filter's late answer, want second-key's", got)
	}
	for _, s := range seen {
		if strings.Contains(s, "first-key") {
			t.Errorf("the request log showed rows of %q on the way (seen %q)", s, seen)
		}
	}
}
