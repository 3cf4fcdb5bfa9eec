"use strict";
// Tollgate admin UI: talks to the management API with the signed-in key.
const $ = (sel) => document.querySelector(sel);
const el = (tag, props = {}, ...kids) => {
  const e = Object.assign(document.createElement(tag), props);
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k ?? ""));
  return e;
};
const state = { key: sessionStorage.getItem("tollgate-key") || "", role: "", writes: false, who: "" };

async function api(method, path, body) {
  const resp = await fetch(path, {
    method, headers: { "Authorization": "Bearer " + state.key, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let data = text;
  try { data = JSON.parse(text); } catch (_) {}
  if (!resp.ok) throw new Error((data && data.error && data.error.message) || (resp.status + " " + text));
  return data;
}

const money = (v) => v == null ? "—" : "$" + Number(v).toFixed(Number(v) < 1 ? 6 : 2);
function budgetBar(spend, max) {
  if (max == null) return el("span", { className: "muted" }, money(spend) + " / no budget");
  const pct = max > 0 ? Math.min(100, 100 * spend / max) : 100;
  const bar = el("span", { className: "bar" + (pct >= 100 ? " over" : pct >= 80 ? " warn" : "") }, el("span", { style: `width:${pct}%` }));
  return el("span", { className: "budget", title: `${spend} of ${max}` }, bar, " ", money(spend) + " / " + money(max));
}
function table(headers, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, ...headers.map(h => el("th", {}, h)))),
    el("tbody", {}, ...(rows.length ? rows : [el("tr", {}, el("td", { colSpan: headers.length, className: "muted" }, "nothing yet"))])));
}
const row = (...cells) => el("tr", {}, ...cells.map(c => el("td", {}, c)));
function fail(err) { $("#page").prepend(el("p", { className: "error" }, String(err.message || err))); }

// ---- sign in ----
async function identify() {
  // A virtual key knows its user and role; the master key is not a virtual key.
  try {
    const info = await api("GET", "/key/info?key=" + encodeURIComponent(state.key));
    const k = info.info || {};
    state.who = k.key_alias || k.key_name || "key";
    state.role = "internal_user";
    if (k.user_id) {
      try { const u = await api("GET", "/user/info?user_id=" + encodeURIComponent(k.user_id)); state.role = (u.user_info || u).user_role || state.role; } catch (_) {}
      state.who = k.user_id;
    }
  } catch (_) {
    await api("GET", "/global/spend"); // only admins and viewers may
    state.role = "proxy_admin";
    state.who = "master key";
  }
  state.writes = !["proxy_admin_viewer", "internal_user_viewer"].includes(state.role);
}

async function signIn(key) {
  state.key = key;
  try {
    await identify();
  } catch (e) {
    sessionStorage.removeItem("tollgate-key");
    $("#login-error").textContent = "That key was refused: " + e.message;
    return;
  }
  sessionStorage.setItem("tollgate-key", key);
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#whoami").textContent = `${state.who} · ${state.role}${state.writes ? "" : " (read only)"}`;
  route();
}
$("#login-form").addEventListener("submit", (ev) => { ev.preventDefault(); signIn($("#login-key").value.trim()); });
$("#logout").onclick = () => { sessionStorage.removeItem("tollgate-key"); location.hash = ""; location.reload(); };

// ---- pages ----
const pages = { keys: keysPage, users: usersPage, teams: teamsPage, customers: customersPage, models: modelsPage, spend: spendPage, logs: logsPage, guardrails: guardrailsPage, audit: auditPage };
const titles = { keys: "Keys", users: "Users", teams: "Teams", customers: "End users", models: "Models", spend: "Spend", logs: "Request logs", guardrails: "Guardrails", audit: "Audit log" };
function route() {
  const name = (location.hash.slice(1) || "keys").split("?")[0];
  $("#nav").replaceChildren(...Object.keys(pages).map(p => el("a", { href: "#" + p, id: "nav-" + p, className: p === name ? "active" : "" }, titles[p])));
  const page = $("#page");
  page.replaceChildren(el("h2", {}, titles[name] || ""));
  (pages[name] || keysPage)(page).catch(fail);
}
window.addEventListener("hashchange", () => state.key && !$("#app").hidden && route());

function field(name, label, type = "text", extra = {}) {
  const id = "f-" + name;
  const input = type === "textarea" ? el("textarea", Object.assign({ name, id, rows: 2 }, extra)) : el("input", Object.assign({ name, id, type }, extra));
  return el("label", {}, label, input);
}
function formValues(form, spec) {
  const out = {};
  for (const [name, kind] of Object.entries(spec)) {
    const input = form.elements[name];
    if (!input) continue;
    if (kind === "bool") { if (input.checked) out[name] = true; continue; }
    const v = input.value.trim();
    if (v === "") continue;
    if (kind === "number") out[name] = Number(v);
    else if (kind === "list") out[name] = v.split(",").map(s => s.trim()).filter(Boolean);
    else if (kind === "json") out[name] = JSON.parse(v);
    else out[name] = v;
  }
  return out;
}

// Keys: every /key/generate field of LiteLLM's docs.
const keySpec = { key_alias: "text", key: "text", duration: "text", models: "list", max_budget: "number", budget_duration: "text",
  soft_budget: "number", tpm_limit: "number", rpm_limit: "number", max_parallel_requests: "number", user_id: "text", team_id: "text",
  tags: "list", spend: "number", blocked: "bool", metadata: "json", aliases: "json", config: "json",
  model_max_budget: "json", model_rpm_limit: "json", model_tpm_limit: "json" };

async function keysPage(page) {
  const banner = el("div");
  page.append(banner);
  if (state.writes) {
    const form = el("form", { className: "grid", id: "key-form" },
      field("key_alias", "Alias"), field("models", "Models (comma-separated)"), field("max_budget", "Max budget ($)", "number", { step: "any" }),
      field("budget_duration", "Budget period (30d, 1mo)"), field("soft_budget", "Soft budget ($)", "number", { step: "any" }),
      field("duration", "Expires after (1h, 7d)"), field("rpm_limit", "RPM limit", "number"), field("tpm_limit", "TPM limit", "number"),
      field("max_parallel_requests", "Max parallel requests", "number"), field("user_id", "User id"), field("team_id", "Team id"),
      field("tags", "Tags (comma-separated)"), field("key", "Custom key (sk-...)"), field("spend", "Starting spend ($)", "number", { step: "any" }),
      field("metadata", "Metadata (JSON)", "textarea"), field("aliases", "Model aliases (JSON)", "textarea"), field("config", "Config (JSON)", "textarea"),
      field("model_max_budget", "Per-model budgets (JSON)", "textarea"), field("model_rpm_limit", "Per-model RPM (JSON)", "textarea"),
      field("model_tpm_limit", "Per-model TPM (JSON)", "textarea"), el("label", {}, el("input", { type: "checkbox", name: "blocked" }), "Blocked"),
      el("div", { className: "actions" }, el("button", { type: "submit", id: "create-key" }, "Create key")));
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      try {
        const k = await api("POST", "/key/generate", formValues(form, keySpec));
        banner.replaceChildren(el("div", { className: "banner", id: "new-key" }, "New key (shown once — copy it now): ", el("code", { id: "new-key-value" }, k.key)));
        form.reset();
        await listKeys(list);
      } catch (e) { banner.replaceChildren(el("p", { className: "error" }, e.message)); }
    };
    page.append(form);
  }
  const search = el("input", { placeholder: "search by alias", id: "key-search" });
  const list = el("div", { id: "key-list" });
  search.oninput = () => listKeys(list, search.value);
  page.append(el("div", { className: "toolbar" }, search), list);
  await listKeys(list);
}

async function listKeys(list, alias = "") {
  const q = "/key/list?return_full_object=true&size=200" + (alias ? "&key_alias=" + encodeURIComponent(alias) : "");
  const data = await api("GET", q);
  const rows = data.keys.map(k => {
    const actions = el("span");
    if (state.writes) {
      const act = (label, fn, cls = "quiet") => actions.append(el("button", { className: cls, onclick: async () => { try { await fn(); await listKeys(list, alias); } catch (e) { fail(e); } } }, label), " ");
      act(k.blocked ? "Unblock" : "Block", () => api("POST", k.blocked ? "/key/unblock" : "/key/block", { key: k.token }));
      act("Regenerate", async () => { const r = await api("POST", "/key/regenerate", { key: k.token }); alert("New key (shown once): " + r.key); });
      act("Delete", () => confirm("Delete this key?") && api("POST", "/key/delete", { keys: [k.token] }), "danger");
    }
    const tr = el("tr", { className: "key-row" },
      el("td", {}, k.key_alias || el("span", { className: "muted" }, "—")), el("td", {}, el("code", {}, k.key_name)),
      el("td", {}, k.user_id || ""), el("td", {}, k.team_id || ""), el("td", {}, (k.models || []).join(", ") || "all"),
      el("td", { className: "spend" }, budgetBar(k.spend || 0, k.max_budget)), el("td", {}, k.blocked ? "blocked" : ""), el("td", {}, actions));
    tr.dataset.alias = k.key_alias || "";
    return tr;
  });
  list.replaceChildren(table(["Alias", "Key", "User", "Team", "Models", "Spend / budget", "", ""], rows),
    el("p", { className: "muted" }, `${data.total_count} keys`));
}

async function usersPage(page) {
  if (state.writes) {
    const form = el("form", { className: "grid" }, field("user_id", "User id"), field("user_email", "Email"),
      el("label", {}, "Role", el("select", { name: "user_role" }, ...["internal_user", "internal_user_viewer", "proxy_admin", "proxy_admin_viewer"].map(r => el("option", { value: r }, r)))),
      field("max_budget", "Max budget ($)", "number", { step: "any" }), el("div", { className: "actions" }, el("button", { type: "submit" }, "Create user")));
    form.onsubmit = async (ev) => { ev.preventDefault(); try { const u = await api("POST", "/user/new", Object.assign(formValues(form, { user_id: "text", user_email: "text", max_budget: "number" }), { user_role: form.elements.user_role.value })); alert("User created; its key (shown once): " + u.key); route(); } catch (e) { fail(e); } };
    page.append(form);
  }
  const data = await api("GET", "/user/list?size=200");
  page.append(table(["User", "Email", "Role", "Spend / budget"], (data.users || []).map(u => row(u.user_id, u.user_email || "", u.user_role || "", budgetBar(u.spend || 0, u.max_budget)))));
}

async function teamsPage(page) {
  if (state.writes) {
    const form = el("form", { className: "grid" }, field("team_id", "Team id"), field("team_alias", "Alias"), field("max_budget", "Max budget ($)", "number", { step: "any" }),
      field("budget_duration", "Budget period"), field("rpm_limit", "RPM limit", "number"), field("models", "Models (comma-separated)"),
      el("div", { className: "actions" }, el("button", { type: "submit" }, "Create team")));
    form.onsubmit = async (ev) => { ev.preventDefault(); try { await api("POST", "/team/new", formValues(form, { team_id: "text", team_alias: "text", max_budget: "number", budget_duration: "text", rpm_limit: "number", models: "list" })); route(); } catch (e) { fail(e); } };
    page.append(form);
  }
  const data = await api("GET", "/team/list");
  const teams = Array.isArray(data) ? data : (data.teams || []);
  page.append(table(["Team", "Alias", "Members", "Spend / budget", "Models", ""], teams.map(t =>
    row(t.team_id, t.team_alias || "", (t.members_with_roles || []).map(m => `${m.user_id} (${m.role})`).join(", "), budgetBar(t.spend || 0, t.max_budget), (t.models || []).join(", ") || "all", t.blocked ? "blocked" : ""))));
}

async function customersPage(page) {
  const data = await api("GET", "/customer/list");
  const list = Array.isArray(data) ? data : (data.customers || []);
  page.append(table(["End user", "Alias", "Spend / budget", ""], list.map(c => row(c.user_id, c.alias || "", budgetBar(c.spend || 0, c.max_budget), c.blocked ? "blocked" : ""))));
}

async function modelsPage(page) {
  const data = await api("GET", "/model/info");
  const health = el("div");
  const check = el("button", { onclick: async () => {
    health.replaceChildren("checking every deployment…");
    try {
      const r = await api("GET", "/health");
      health.replaceChildren(table(["Deployment", "Model", "Health", "Error"], [
        ...r.healthy_endpoints.map(e => row(e.model_id, e.model, "healthy", "")),
        ...r.unhealthy_endpoints.map(e => row(e.model_id, e.model, "unhealthy", e.error || ""))]));
    } catch (e) { health.replaceChildren(el("p", { className: "error" }, e.message)); }
  } }, "Check health");
  const status = (i) => i.cooldown_until ? "cooling down until " + new Date(i.cooldown_until).toLocaleTimeString() : i.healthy === false ? "failing health checks" : "serving";
  page.append(table(["Model", "Deployment", "Upstream", "Limits", "State", "Source"], data.data.map(m => row(m.model_name, m.model_info.id,
    m.litellm_params.model + (m.litellm_params.api_base ? " @ " + m.litellm_params.api_base : ""),
    ["rpm", "tpm", "weight", "order"].filter(f => m.litellm_params[f] != null).map(f => `${f} ${m.litellm_params[f]}`).join(", "),
    status(m.model_info), m.model_info.db_model ? "API" : "config"))), el("div", { className: "toolbar" }, check), health);
}

// Spend: per-day bars by team, key and model, and the top spenders.
function barChart(title, days, series) {
  const w = 900, h = 180, pad = 30;
  const max = Math.max(1e-9, ...days.map(d => Object.values(series[d] || {}).reduce((a, b) => a + b, 0)));
  const names = [...new Set(days.flatMap(d => Object.keys(series[d] || {})))];
  const colors = ["#2f6fdb", "#1e8a4c", "#d97706", "#c93c37", "#7c3aed", "#0891b2", "#be185d", "#4b5563"];
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h + pad}`);
  svg.setAttribute("width", "100%");
  const bw = Math.min(60, Math.max(4, (w - 20) / Math.max(days.length, 1) - 6));
  days.forEach((d, i) => {
    let y = h;
    names.forEach((n, j) => {
      const v = (series[d] || {})[n] || 0;
      if (!v) return;
      const bh = h * v / max;
      y -= bh;
      const r = document.createElementNS(svg.namespaceURI, "rect");
      Object.entries({ x: 10 + i * (bw + 6), y, width: bw, height: bh, fill: colors[j % colors.length] }).forEach(([k, val]) => r.setAttribute(k, val));
      const t = document.createElementNS(svg.namespaceURI, "title");
      t.textContent = `${d} ${n}: ${money(v)}`;
      r.append(t);
      svg.append(r);
    });
    const label = document.createElementNS(svg.namespaceURI, "text");
    Object.entries({ x: 10 + i * (bw + 6), y: h + 16, "font-size": 10 }).forEach(([k, val]) => label.setAttribute(k, val));
    label.textContent = d.slice(5);
    svg.append(label);
  });
  const legend = el("div", { className: "muted" }, ...names.map((n, j) => el("span", { style: `color:${colors[j % colors.length]}; margin-right: 12px` }, "■ " + (n || "(none)"))));
  return el("div", { className: "chart" }, el("strong", {}, title), svg, legend);
}

async function spendPage(page) {
  if (!["proxy_admin", "proxy_admin_viewer"].includes(state.role)) {
    page.append(el("p", { className: "muted" }, "Spend reports need an admin or admin-viewer key; your keys' spend is on the Keys page."));
    return;
  }
  const total = await api("GET", "/global/spend");
  page.append(el("p", { id: "total-spend" }, "Total spend: ", el("strong", {}, money(total.spend)), total.max_budget != null ? " of " + money(total.max_budget) : ""));
  const top = {};
  for (const [group, list, name] of [["team", "teams", "team_name"], ["api_key", "api_keys", "api_key"]]) {
    const report = await api("GET", "/global/spend/report?group_by=" + group);
    const days = report.map(d => d.group_by_day);
    const series = {}, byModel = {};
    for (const d of report) {
      series[d.group_by_day] = {};
      byModel[d.group_by_day] = byModel[d.group_by_day] || {};
      for (const g of d[list] || []) {
        series[d.group_by_day][g[name]] = (series[d.group_by_day][g[name]] || 0) + g.total_spend;
        if (group === "api_key") top[g[name]] = (top[g[name]] || 0) + g.total_spend;
        for (const m of g.metadata || []) byModel[d.group_by_day][m.model] = (byModel[d.group_by_day][m.model] || 0) + m.spend;
      }
    }
    page.append(barChart("Spend per day by " + (group === "api_key" ? "key" : group), days, series));
    if (group === "team") page.append(barChart("Spend per day by model", days, byModel));
  }
  const ranked = Object.entries(top).sort((a, b) => b[1] - a[1]).slice(0, 10);
  page.append(el("h3", {}, "Top spenders"), table(["Key (hash)", "Spend"], ranked.map(([k, v]) => row(el("code", {}, k.slice(0, 16) + "…"), money(v)))));
  // By request tag (x-litellm-tags, metadata.tags, key and team tags): a
  // request with several tags counts under each.
  const tags = await api("GET", "/spend/tags");
  const byTag = table(["Tag", "Requests", "Spend"], tags.map(t => row(t.individual_request_tag, String(t.log_count), money(t.total_spend))));
  byTag.id = "tag-spend";
  page.append(el("h3", {}, "Spend by tag"), tags.length ? byTag : el("p", { className: "muted", id: "tag-spend" }, "No tagged requests yet."));
  await cacheSummary(page);
}

// The response cache (litellm_settings.cache): its backend, and among the
// last 1,000 requests the hits and what they saved (spend-log rows with
// cache_hit "True" and saved_cache_cost).
async function cacheSummary(page) {
  const box = el("p", { id: "cache-spend" });
  page.append(el("h3", {}, "Response cache"), box);
  let ping;
  try { ping = await api("GET", "/cache/ping"); } catch (e) { box.textContent = "The response cache is off (litellm_settings.cache)."; box.className = "muted"; return; }
  const logs = await api("GET", "/spend/logs?page=1&size=1000");
  const hits = logs.filter(l => l.cache_hit === "True");
  const saved = hits.reduce((s, l) => s + (l.saved_cache_cost || 0), 0);
  box.append(`${ping.cache_type} cache. Of the last ${logs.length} requests, ${hits.length} were answered from it, saving `, el("strong", {}, money(saved)), ".");
}

function pager(page, load) {
  let n = 1;
  const body = el("div");
  const prev = el("button", { className: "quiet", onclick: () => { if (n > 1) { n--; go(); } } }, "← Newer");
  const next = el("button", { className: "quiet", onclick: () => { n++; go(); } }, "Older →");
  const label = el("span", { className: "muted" });
  const go = () => load(n).then(([content, more]) => { body.replaceChildren(content); label.textContent = "page " + n; next.disabled = !more; }).catch(fail);
  page.append(el("div", { className: "toolbar" }, prev, label, next), body);
  go();
}

// A request's stored detail: its metadata, and the messages and response
// when store_prompts_in_spend_logs kept them; "" when there is none.
function logDetail(l) {
  const parts = [];
  const shown = (v) => v && (Array.isArray(v) ? v.length : Object.keys(v).length);
  const md = (l.metadata || {}).requester_metadata;
  if (shown(md)) parts.push(["Metadata", md]);
  if (shown(l.messages)) parts.push(["Messages", l.messages]);
  if (shown(l.response)) parts.push(["Response", l.response]);
  if (!parts.length) return "";
  return el("details", { className: "log-detail" }, el("summary", {}, parts.map(p => p[0].toLowerCase()).join(", ")),
    ...parts.flatMap(([name, v]) => [el("strong", {}, name), el("pre", {}, JSON.stringify(v, null, 2))]));
}

// What the guardrails did to a request: "name: action (ENTITY×n, ...)",
// one per guardrail run; never the text they found.
function guardrailSummary(l) {
  return (l.guardrails || []).filter(g => g.action !== "passed").map(g => {
    const ents = Object.entries(g.entities || {}).map(([e, n]) => `${e}×${n}`).join(", ");
    return `${g.guardrail}: ${g.action}` + (ents ? ` (${ents})` : "");
  }).join("; ");
}

async function guardrailsPage(page) {
  const data = await api("GET", "/guardrails/list");
  page.append(table(["Name", "Kind", "Mode", "Default on", "Active"], (data.guardrails || []).map(g => {
    const p = g.litellm_params || {};
    return row(g.guardrail_name, p.guardrail || "", (p.mode || []).join(", "), p.default_on ? "yes" : "no", g.active ? "yes" : "inactive (kind not served)");
  })));
}

async function logsPage(page) {
  pager(page, async (n) => {
    const data = await api("GET", `/spend/logs?page=${n}&size=50`);
    return [table(["Time", "Request", "Key", "Model", "Deployment", "Tokens in/out", "Cost", "Status", "Latency", "Tags", "Guardrails", "Detail", "Cache"], data.map(l => {
      const r = row(new Date(l.startTime).toLocaleString(), el("code", {}, l.request_id.slice(0, 12)), el("code", {}, (l.api_key || "").slice(0, 10)), l.model_group, l.model_id,
        `${l.prompt_tokens} / ${l.completion_tokens}`, money(l.spend), String(l.http_status), l.latency_ms + " ms", (l.request_tags || []).join(", "), guardrailSummary(l), logDetail(l),
        l.cache_hit === "True" ? "hit, saved " + money(l.saved_cache_cost || 0) : "");
      r.cells[9].className = "tags";
      r.cells[10].className = "guardrails";
      return r;
    })), data.length === 50];
  });
}

async function auditPage(page) {
  pager(page, async (n) => {
    const data = await api("GET", `/audit/list?page=${n}&size=50`);
    return [table(["Time", "Actor", "Action", "Object"], (data.audit_logs || []).map(a =>
      row(new Date(a.updated_at).toLocaleString(), el("code", {}, (a.changed_by || "").slice(0, 12)), a.action, `${a.table_name} ${a.object_id}`))), n * 50 < data.total_count];
  });
}

if (state.key) signIn(state.key);
