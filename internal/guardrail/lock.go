package guardrail

// ModifyLocked reports whether a key's or team's metadata md carries
// LiteLLM's lock on per-request guardrail changes, {"guardrails":
// {"modify_guardrails": false}} (only the boolean false locks, as in
// LiteLLM). The gateway refuses (403) a call under the lock that names
// guardrails; the management API lets only a proxy_admin lift it.
func ModifyLocked(md map[string]any) bool {
	g, ok := md["guardrails"].(map[string]any)
	if !ok {
		return false
	}
	v, ok := g["modify_guardrails"].(bool)
	return ok && !v
}
