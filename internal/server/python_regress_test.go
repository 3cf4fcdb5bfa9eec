package server

import (
	"crypto/sha256"
	"encoding/hex"
	"github.com/tollgate/tollgate/internal/config"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// pyRegressDir writes hooks.py (src) and a config whose custom_auth is
// hooks.auth (LiteLLM's module.function form) beside it.
func pyRegressDir(t *testing.T, src, up string) string {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not installed")
	}
	dir := t.TempDir()
	cfg := `model_list:
  - model_name: "openai-model"
    litellm_params:
      model: "gpt-3.5-turbo"
      api_base: ` + up + `/v1
      api_key: sk-upstream-secret
general_settings:
  custom_auth: hooks.auth
  tollgate_python_hooks:
    workers: 2
    timeout: 2
`
	if err := os.WriteFile(filepath.Join(dir, "hooks.py"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "config.yaml")
}

// TestPythonAuthInfiniteBudgetIsNoLimit: LiteLLM's UserAPIKeyAuth is a pydantic
// model whose float fields accept inf (and nan); a hook that says "no
// budget" with max_budget=float("inf") is allowed there. Before the fix the bootstrap
// writes the answer with json.dumps' default allow_nan=True ("Infinity"),
// the pool's reader cannot parse that line and drops it
// (pyhook.go: `if json.Unmarshal(line, &r) != nil { continue }`), so the
// call waits out the whole timeout, the healthy worker is killed, and the
// client gets a 503 — on every request.
//
// Regression test for #32: the comment above describes the defect as it was
// before the fix.
func TestPythonAuthInfiniteBudgetIsNoLimit(t *testing.T) {
	t.Parallel()
	urls, _ := upstreams(t, "up")
	path := pyRegressDir(t, `from litellm.proxy._types import UserAPIKeyAuth

async def auth(request, api_key):
    if api_key != "sk-good":
        raise Exception("no")
    return UserAPIKeyAuth(api_key=api_key, max_budget=float("inf"))
`, urls["up"])
	url, _ := servePy(t, path, true)
	chat := `{"model": "openai-model", "messages": [{"role": "user", "content": "hi"}]}`
	resp, body := postAs(t, url, "/v1/chat/completions", chat, "Authorization", "Bearer sk-good")
	if resp.StatusCode != 200 {
		t.Fatalf("max_budget=inf (allowed by LiteLLM): %d %s", resp.StatusCode, body)
	}
}

// TestPythonHookLongPrintLineDoesNotBlock: a custom_auth that prints the request
// body it was given (a usual debugging line) on a 300 KB request in French
// writes one stderr line over 1 MiB (bytes' repr spells é as \xc3\xa9). The stderr copier's Scanner
// (pyhook.go, sc.Buffer(..., 1<<20)) stops with ErrTooLong and nobody
// reads the pipe any more: the worker blocks in print(), the call runs
// into the deadline, the worker is killed and the client gets a 503 for a
// hook that allowed it.
//
// Regression test for #32: the comment above describes the defect as it was
// before the fix.
func TestPythonHookLongPrintLineDoesNotBlock(t *testing.T) {
	t.Parallel()
	urls, _ := upstreams(t, "up")
	path := pyRegressDir(t, `from litellm.proxy._types import UserAPIKeyAuth

async def auth(request, api_key):
    print("custom auth got:", await request.body())
    if api_key != "sk-good":
        raise Exception("no")
    return UserAPIKeyAuth(api_key=api_key)
`, urls["up"])
	url, _ := servePy(t, path, true)
	pad := strings.Repeat("é", 150000)
	chat := `{"model": "openai-model", "messages": [{"role": "user", "content": "` + pad + `"}]}`
	if len(chat) > 1<<20 {
		t.Fatalf("body %d over the hook's 1 MiB", len(chat))
	}
	resp, body := postAs(t, url, "/v1/chat/completions", chat, "Authorization", "Bearer sk-good")
	if resp.StatusCode != 200 {
		if len(body) > 300 {
			body = body[:300]
		}
		t.Fatalf("a hook that printed its (<1 MiB) body and allowed: %d %s", resp.StatusCode, body)
	}
}

// TestPythonKeyGenerateNoneDecisionRefuses: LiteLLM reads
// `decision = result.get("decision", True)` and refuses `if not decision`
// (403): a hook answering {"decision": None} — a helper that fell off its
// end — refuses there. Before the fix the answer is unmarshalled into a *bool, null
// leaves it nil and nil means "defaults to true" (hooks.go callPython:
// `Allow: out.Decision == nil || *out.Decision`), so the key is made: a bad
// hook lets the request through.
//
// Regression test for #32: the comment above describes the defect as it was
// before the fix.
func TestPythonKeyGenerateNoneDecisionRefuses(t *testing.T) {
	t.Parallel()
	urls, _ := upstreams(t, "up")
	path := pyRegressDir(t, `from litellm.proxy._types import UserAPIKeyAuth

def team_ok(team_id):
    if team_id == "core":
        return True
    # forgot: return False

async def auth(request, api_key):
    return UserAPIKeyAuth(api_key=api_key)

async def keygen(data):
    return {"decision": team_ok(data.json().get("team_id")), "message": "only team core makes keys"}
`, urls["up"])
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), "  custom_auth: hooks.auth\n", "  master_key: sk-1234\n  custom_key_generate: hooks.keygen\n", 1)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	url, _ := servePy(t, path, true)
	send(t, url+"/team/new", "sk-1234", `{"team_id": "other"}`)
	if code, out := send(t, url+"/key/generate", "sk-1234", `{"team_id": "other"}`); code != 403 {
		t.Fatalf(`{"decision": None} (LiteLLM: 403): %d %s`, code, out)
	}
}

// TestPythonAuthWholeFloatLimitAccepted: LiteLLM validates the returned
// UserAPIKeyAuth with pydantic, which takes a whole float for an int field
// (tpm_limit=1e6, rpm_limit=100.0); here json.Unmarshal of 1000000.0 into
// Decision.TPMLimit (*int64) fails and the allowed caller gets a 401
// "returned a UserAPIKeyAuth, not a UserAPIKeyAuth" (hooks.go callPython).
//
// Regression test for #32: the comment above describes the defect as it was
// before the fix.
func TestPythonAuthWholeFloatLimitAccepted(t *testing.T) {
	t.Parallel()
	urls, _ := upstreams(t, "up")
	path := pyRegressDir(t, `from litellm.proxy._types import UserAPIKeyAuth

async def auth(request, api_key):
    return UserAPIKeyAuth(api_key=api_key, tpm_limit=1e6, rpm_limit=100.0)
`, urls["up"])
	url, _ := servePy(t, path, true)
	chat := `{"model": "openai-model", "messages": [{"role": "user", "content": "hi"}]}`
	if resp, body := postAs(t, url, "/v1/chat/completions", chat, "Authorization", "Bearer sk-good"); resp.StatusCode != 200 {
		t.Fatalf("tpm_limit=1e6 (allowed by LiteLLM): %d %s", resp.StatusCode, body)
	}
}

// TestPythonAuthImportsLitellmUserRoles: docs/custom-auth.md says a
// UserAPIKeyAuth's user_role (e.g. proxy_admin) is the caller's management
// role; LiteLLM's field is Optional[LitellmUserRoles] and its hooks write
// `user_role=LitellmUserRoles.PROXY_ADMIN`, imported from
// litellm.proxy._types. Without the litellm package the bootstrap's
// stand-in module (bootstrap.py _stand_ins) has only UserAPIKeyAuth,
// GenerateKeyRequest and ProxyException, so the import fails and serve
// does not start.
//
// Regression test for #32: the comment above describes the defect as it was
// before the fix.
func TestPythonAuthImportsLitellmUserRoles(t *testing.T) {
	t.Parallel()
	urls, _ := upstreams(t, "up")
	path := pyRegressDir(t, `from litellm.proxy._types import UserAPIKeyAuth, LitellmUserRoles

async def auth(request, api_key):
    if api_key == "sk-ops":
        return UserAPIKeyAuth(api_key=api_key, user_id="ops", user_role=LitellmUserRoles.PROXY_ADMIN)
    raise Exception("unknown key")
`, urls["up"])
	mustStart(t, path, "a hook importing LitellmUserRoles")
}

// TestPythonAuthExceptionStatusHonoured: LiteLLM's auth turns a hook's
// HTTPException into its status_code and detail, and re-raises a
// ProxyException as is (its code), keeping "Authentication Error, " for
// other exceptions only. Before the fix every raise is a 401 "Authentication Error,
// ..." (hooks.go callPython ignores Raised.Status, which pyhook fills), and
// `from fastapi import HTTPException` fails the import where fastapi is
// not installed (the stand-in fastapi has only Request).
//
// Regression test for #32: the comment above describes the defect as it was
// before the fix.
func TestPythonAuthExceptionStatusHonoured(t *testing.T) {
	t.Parallel()
	urls, _ := upstreams(t, "up")
	path := pyRegressDir(t, `from litellm.proxy._types import UserAPIKeyAuth, ProxyException

async def auth(request, api_key):
    raise ProxyException(message="over this month's quota", type="auth_error", param=None, code=403)
`, urls["up"])
	url, _ := servePy(t, path, true)
	chat := `{"model": "openai-model", "messages": [{"role": "user", "content": "hi"}]}`
	resp, body := postAs(t, url, "/v1/chat/completions", chat, "Authorization", "Bearer sk-x")
	if resp.StatusCode != 403 || strings.Contains(body, "Authentication Error, ") {
		t.Errorf("ProxyException(code=403) (LiteLLM: 403 with its message): %d %s", resp.StatusCode, body)
	}
	path = pyRegressDir(t, `from fastapi import HTTPException, Request

async def auth(request: Request, api_key: str):
    raise HTTPException(status_code=403, detail="not on the allow list")
`, urls["up"])
	mustStart(t, path, "a hook importing fastapi's HTTPException")
}

// TestPythonAuthSeesExactBodyBytes: LiteLLM's hook gets fastapi's Request,
// whose body() is the bytes the client sent — what a request-signing hook
// (an HMAC or digest of the body) checks. Before the fix the body travels as a Go
// string in JSON (auth.go pythonRequest: req["body"] = string(buf)), and
// json.Marshal replaces every byte that is not UTF-8 with U+FFFD: a
// multipart upload (an audio file) reaches the hook altered, so its digest
// never matches.
//
// Regression test for #32: the comment above describes the defect as it was
// before the fix.
func TestPythonAuthSeesExactBodyBytes(t *testing.T) {
	t.Parallel()
	urls, _ := upstreams(t, "up")
	path := pyRegressDir(t, `import hashlib
from litellm.proxy._types import UserAPIKeyAuth

async def auth(request, api_key):
    got = hashlib.sha256(await request.body()).hexdigest()
    if got != request.headers.get("x-body-sha256"):
        raise Exception("body digest mismatch: hook saw %d bytes" % len(await request.body()))
    raise Exception("body digest ok")
`, urls["up"])
	url, _ := servePy(t, path, true)
	body := "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\x24\x08\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x80\xbb\x00\x00\xff\xfe\r\n--b--\r\n"
	sum := sha256.Sum256([]byte(body))
	resp, out := postAs(t, url, "/v1/audio/transcriptions", body, "Authorization", "Bearer sk-x",
		"Content-Type", "multipart/form-data; boundary=b", "x-body-sha256", hex.EncodeToString(sum[:]))
	if !strings.Contains(out, "body digest ok") {
		t.Fatalf("the hook did not get the body's bytes (%d bytes sent): %d %s", len(body), resp.StatusCode, out)
	}
}

// TestPythonAuthCacheIsPerRoute: with tollgate_python_hooks.cache_ttl
// a decision is kept per key alone (auth.go custom: ck = "python\x00"+raw),
// though the hook was asked about one request (method, path). The docs warn
// only functions that look at headers or the body off the cache; a hook
// that refuses a route (here /key/*, common in LiteLLM hooks) is bypassed
// for the TTL once the same key was allowed on another route.
//
// Regression test for #32: the comment above describes the defect as it was
// before the fix.
func TestPythonAuthCacheIsPerRoute(t *testing.T) {
	t.Parallel()
	urls, _ := upstreams(t, "up")
	path := pyRegressDir(t, `from litellm.proxy._types import UserAPIKeyAuth

async def auth(request, api_key):
    if api_key != "sk-app":
        raise Exception("unknown key")
    if request.url.path.startswith("/key/"):
        raise Exception("keys are managed centrally")
    return UserAPIKeyAuth(api_key=api_key, user_id="app")
`, urls["up"])
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), "    timeout: 2\n", "    timeout: 2\n    cache_ttl: 60\n", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	url, _ := servePy(t, path, true)
	chat := `{"model": "openai-model", "messages": [{"role": "user", "content": "hi"}]}`
	if resp, body := postAs(t, url, "/v1/chat/completions", chat, "Authorization", "Bearer sk-app"); resp.StatusCode != 200 {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	code, out := send(t, url+"/key/generate", "sk-app", `{}`)
	if code != 401 || !strings.Contains(out, "keys are managed centrally") {
		t.Fatalf("/key/generate, which the hook refuses, after a cached allow on chat: %d %s", code, out)
	}
}

// TestPythonAuthSeesClientAddress: fastapi's Request has client.host, the
// caller's address — what an IP allow-list custom_auth reads. The request
// handed to the hook carries no address (auth.go pythonRequest) and the
// stand-in Request (bootstrap.py) has no client, so such a hook raises
// AttributeError and refuses every caller.
//
// Regression test for #32: the comment above describes the defect as it was
// before the fix.
func TestPythonAuthSeesClientAddress(t *testing.T) {
	t.Parallel()
	urls, _ := upstreams(t, "up")
	path := pyRegressDir(t, `from litellm.proxy._types import UserAPIKeyAuth

ALLOWED = {"127.0.0.1"}

async def auth(request, api_key):
    if request.client is None or request.client.host not in ALLOWED:
        raise Exception("address not allowed")
    return UserAPIKeyAuth(api_key=api_key)
`, urls["up"])
	url, _ := servePy(t, path, true)
	chat := `{"model": "openai-model", "messages": [{"role": "user", "content": "hi"}]}`
	if resp, body := postAs(t, url, "/v1/chat/completions", chat, "Authorization", "Bearer sk-x"); resp.StatusCode != 200 {
		t.Fatalf("a loopback caller and an allow-list of 127.0.0.1: %d %s", resp.StatusCode, body)
	}
}

// TestPythonAuthRefusalStatuses: how each way a custom_auth refuses is
// answered (#32). An HTTPException or ProxyException gives its status and
// message as in LiteLLM; a status that is not a refusal (2xx) still refuses
// (401); anything else is LiteLLM's 401 "Authentication Error, ..."; a
// non-whole integer limit and a NaN are refusals, at once, not timeouts.
func TestPythonAuthRefusalStatuses(t *testing.T) {
	t.Parallel()
	urls, _ := upstreams(t, "up")
	path := pyRegressDir(t, `from fastapi import HTTPException
from litellm.proxy._types import UserAPIKeyAuth, ProxyException

async def auth(request, api_key):
    if api_key == "sk-http403":
        raise HTTPException(status_code=403, detail="not on the allow list")
    if api_key == "sk-http200":
        raise HTTPException(status_code=200, detail="fine?")
    if api_key == "sk-proxy429":
        raise ProxyException(message="slow down", type="auth_error", param=None, code="429")
    if api_key == "sk-frac":
        return UserAPIKeyAuth(api_key=api_key, tpm_limit=1.5)
    if api_key == "sk-nan":
        return UserAPIKeyAuth(api_key=api_key, max_budget=float("nan"))
    raise Exception("nope")
`, urls["up"])
	url, _ := servePy(t, path, true)
	chat := `{"model": "openai-model", "messages": [{"role": "user", "content": "hi"}]}`
	tests := []struct {
		key  string
		code int
		want string
	}{
		{"sk-http403", 403, "not on the allow list"},
		{"sk-http200", 401, "fine?"},
		{"sk-proxy429", 429, "slow down"},
		{"sk-plain", 401, "Authentication Error, nope"},
		{"sk-frac", 401, "tpm_limit is 1.5, not a whole number"},
		{"sk-nan", 401, "not a number a hook may return"},
	}
	for _, tt := range tests {
		resp, body := postAs(t, url, "/v1/chat/completions", chat, "Authorization", "Bearer "+tt.key)
		if resp.StatusCode != tt.code || !strings.Contains(body, tt.want) {
			t.Errorf("%s: %d %s, want %d with %q", tt.key, resp.StatusCode, body, tt.code, tt.want)
		}
	}
}

// TestPythonKeyGenerateDecisionTruthiness: custom_key_generate's answer is
// read as LiteLLM reads it (#32): result.get("decision", True), refused
// (403) if not truthy; an HTTPException keeps its status, another
// exception is a 400.
func TestPythonKeyGenerateDecisionTruthiness(t *testing.T) {
	t.Parallel()
	urls, _ := upstreams(t, "up")
	path := pyRegressDir(t, `from litellm.proxy._types import UserAPIKeyAuth

async def auth(request, api_key):
    return UserAPIKeyAuth(api_key=api_key)

ANSWERS = {"absent": {"message": "m"}, "true": {"decision": True}, "zero": {"decision": 0},
           "empty": {"decision": ""}, "word": {"decision": "yes"}, "false": {"decision": False}}

async def keygen(data):
    alias = data.json().get("key_alias")
    if alias == "http409":
        from fastapi import HTTPException
        raise HTTPException(status_code=409, detail="alias taken")
    if alias == "raise":
        raise ValueError("bad alias")
    return ANSWERS[alias]
`, urls["up"])
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), "  custom_auth: hooks.auth\n", "  master_key: sk-1234\n  custom_key_generate: hooks.keygen\n", 1)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	url, _ := servePy(t, path, true)
	tests := []struct {
		alias string
		code  int
	}{
		{"absent", 200}, {"true", 200}, {"word", 200},
		{"zero", 403}, {"empty", 403}, {"false", 403},
		{"http409", 409}, {"raise", 400},
	}
	for _, tt := range tests {
		if code, out := send(t, url+"/key/generate", "sk-1234", `{"key_alias": "`+tt.alias+`"}`); code != tt.code {
			t.Errorf("decision %s: %d %s, want %d", tt.alias, code, out, tt.code)
		}
	}
}

// mustStart builds a server on the config at path (its Python hooks
// imported) and closes it; what names the hook in the failure.
func mustStart(t *testing.T, path, what string) {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, Options{Logger: testLogger, Store: sqliteStore(t)})
	if err != nil {
		t.Fatalf("%s does not start: %v", what, err)
	}
	srv.Close()
}
