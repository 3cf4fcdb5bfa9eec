"use strict";
// Tollgate admin UI: talks to the management API with the signed-in key.
// The server decides what a key may read and write; the UI only leaves out
// what the key's role would be refused anyway.
const $ = (sel) => document.querySelector(sel);
const el = (tag, props = {}, ...kids) => {
  const e = Object.assign(document.createElement(tag), props);
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k ?? ""));
  return e;
};
const svgEl = (tag, attrs = {}) => {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
};
const state = { key: sessionStorage.getItem("tollgate-key") || "", role: "", writes: false, who: "", userId: "", admin: false };
// Names for ids: key hashes → alias (or the key's sk-…abcd name), users →
// email, teams → alias. Filled after sign-in from the lists the key may read.
const names = { keys: {}, users: {}, teams: {}, keyList: [], userList: [], teamList: [] };

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

const money = (v) => v == null ? "—" : "$" + Number(v).toFixed(Math.abs(Number(v)) < 1 ? 6 : 2);
// A hash no list names (a deleted key, another user's) shows its first
// eight hex digits; the audit log's other actors are master_key and
// open-gateway.
const keyLabel = (hash) => !hash ? "—" : hash === "master_key" ? "master key" : names.keys[hash] || (/^[0-9a-f]{64}$/.test(hash) ? "key " + hash.slice(0, 8) + "…" : hash);
const userLabel = (id) => !id ? "" : names.users[id] || id;
const teamLabel = (id) => !id ? "" : names.teams[id] || id;
const day = (d) => d.toISOString().slice(0, 10);
const daysAgo = (n) => { const d = new Date(); d.setUTCDate(d.getUTCDate() - n); return day(d); };
const monthStart = () => day(new Date()).slice(0, 8) + "01";

function budgetBar(spend, max) {
  if (max == null) return el("span", { className: "muted" }, money(spend) + " / no budget");
  const pct = max > 0 ? Math.min(100, 100 * spend / max) : 100;
  const fill = el("span");
  fill.style.width = pct + "%";
  const bar = el("span", { className: "bar" + (pct >= 100 ? " over" : pct >= 80 ? " warn" : "") }, fill);
  return el("span", { className: "budget", title: `${pct.toFixed(1)}% of the budget` }, bar, " ", money(spend) + " / " + money(max));
}
function table(headers, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, ...headers.map(h => el("th", {}, h)))),
    el("tbody", {}, ...(rows.length ? rows : [el("tr", {}, el("td", { colSpan: headers.length, className: "muted" }, "nothing yet"))])));
}
const row = (...cells) => el("tr", {}, ...cells.map(c => el("td", {}, c)));
function fail(err) { $("#page").prepend(el("p", { className: "error" }, String(err.message || err))); }
const card = (title, id, ...kids) => el("div", { className: "card", id }, el("div", { className: "card-title" }, title), ...kids);

// ---- sign in ----
async function identify() {
  // A virtual key knows its user and role; the master key is not a virtual key.
  try {
    const info = await api("GET", "/key/info?key=" + encodeURIComponent(state.key));
    const k = info.info || {};
    state.who = k.key_alias || k.key_name || "key";
    state.role = "internal_user";
    if (k.user_id) {
      state.userId = k.user_id;
      try {
        const u = await api("GET", "/user/info?user_id=" + encodeURIComponent(k.user_id));
        const ui = u.user_info || u;
        state.role = ui.user_role || state.role;
        state.who = ui.user_email || k.user_id;
      } catch (_) { state.who = k.user_id; }
    }
  } catch (_) {
    await api("GET", "/global/spend"); // only admins and viewers may
    state.role = "proxy_admin";
    state.who = "master key";
  }
  state.writes = !["proxy_admin_viewer", "internal_user_viewer"].includes(state.role);
  state.admin = ["proxy_admin", "proxy_admin_viewer"].includes(state.role);
}

async function loadNames() {
  const keys = await api("GET", "/key/list?return_full_object=true&size=1000").catch(() => ({ keys: [] }));
  names.keyList = keys.keys || [];
  names.keys = {};
  for (const k of names.keyList) names.keys[k.token] = k.key_alias || k.key_name;
  if (!state.admin) {
    if (state.userId) names.users = { [state.userId]: state.who };
    return;
  }
  const [users, teams] = await Promise.all([api("GET", "/user/list?size=1000").catch(() => ({})), api("GET", "/team/list").catch(() => [])]);
  names.userList = users.users || [];
  names.teamList = Array.isArray(teams) ? teams : (teams.teams || []);
  names.users = {}; names.teams = {};
  for (const u of names.userList) names.users[u.user_id] = u.user_alias || u.user_email || u.user_id;
  for (const t of names.teamList) names.teams[t.team_id] = t.team_alias || t.team_id;
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
  await loadNames();
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#whoami").textContent = `${state.who} · ${state.role}${state.writes ? "" : " (read only)"}`;
  route();
}
$("#login-form").addEventListener("submit", (ev) => { ev.preventDefault(); signIn($("#login-key").value.trim()); });
$("#logout").onclick = () => { sessionStorage.removeItem("tollgate-key"); location.hash = ""; location.reload(); };

// ---- pages ----
// Everyone's pages, then the admin menu (admins and admin viewers only:
// the server refuses these reads to other roles).
const pages = { overview: overviewPage, keys: keysPage, spend: spendPage, logs: logsPage, models: modelsPage };
const adminPages = { users: usersPage, teams: teamsPage, customers: customersPage, guardrails: guardrailsPage, audit: auditPage };
const titles = { overview: "Overview", keys: "Keys", spend: "Spend", logs: "Request logs", models: "Models",
  users: "Users", teams: "Teams", customers: "End users", guardrails: "Guardrails", audit: "Audit log" };
function route() {
  const name = (location.hash.slice(1) || "overview").split("?")[0];
  const link = (p) => el("a", { href: "#" + p, id: "nav-" + p, className: p === name ? "active" : "" }, titles[p]);
  const nav = [...Object.keys(pages).map(link)];
  if (state.admin) nav.push(el("span", { className: "nav-group", id: "admin-menu" }, el("span", { className: "nav-label" }, "Admin"), ...Object.keys(adminPages).map(link)));
  $("#nav").replaceChildren(...nav);
  const page = $("#page");
  if (tip) tip.hidden = true;
  page.replaceChildren(el("h2", {}, titles[name] || "Not found"));
  if (adminPages[name] && !state.admin) {
    page.append(el("div", { className: "notice error", id: "forbidden" },
      `${titles[name]} is for admins: your key's role (${state.role}) may not read it, and the server refuses it too. `,
      el("a", { href: "#overview" }, "Back to the overview")));
    return;
  }
  const fn = pages[name] || adminPages[name];
  if (!fn) { page.append(el("p", { className: "error" }, "There is no page " + name + ".")); return; }
  fn(page).catch(fail);
}
window.addEventListener("hashchange", () => state.key && !$("#app").hidden && route());

// ---- spend data ----
// Groupings a role may chart: admins read the gateway's reports; others
// their own rows' per-day summary (/spend/logs with dates), which has keys,
// models and users.
const groupNames = { api_key: "key", user: "user", team: "team", model: "model", tag: "tag", end_user: "end user" };
const groupsFor = () => state.admin ? Object.keys(groupNames) : ["api_key", "model"];
const groupLabel = (group, id) => group === "api_key" ? keyLabel(id) : group === "user" ? (id ? userLabel(id) : "(no user)")
  : group === "team" ? (id ? teamLabel(id) : "(no team)") : group === "end_user" ? (id || "(no end user)") : (id || "(none)");

// dailySpend returns {day: {id: spend}} for the days from..to (inclusive).
async function dailySpend(group, from, to) {
  const series = {};
  const add = (d, id, v) => { series[d] = series[d] || {}; series[d][id] = (series[d][id] || 0) + v; };
  const dates = `start_date=${from}&end_date=${to}`;
  if (!state.admin) {
    for (const d of await api("GET", `/spend/logs?${dates}`)) {
      if (group === "model") for (const [m, v] of Object.entries(d.models || {})) add(d.startTime, m, v);
      else for (const [k, v] of Object.entries(d)) if (!["startTime", "spend", "users", "models"].includes(k)) add(d.startTime, k, v);
    }
    return series;
  }
  if (group === "tag") {
    const r = await api("GET", `/tag/daily/activity?${dates}&page_size=1000`);
    for (const d of r.results) for (const [t, m] of Object.entries(d.breakdown.entities || {})) add(d.date, t, m.metrics.spend);
    return series;
  }
  const report = { api_key: ["api_key", "api_keys", "api_key"], user: ["user", "users", "user_id"], team: ["team", "teams", "team_id"],
    end_user: ["customer", "customers", "customer"], model: ["team", "teams", null] }[group];
  for (const d of await api("GET", `/global/spend/report?group_by=${report[0]}&${dates}`)) {
    for (const g of d[report[1]] || []) {
      if (report[2]) add(d.group_by_day, g[report[2]] || "", g.total_spend);
      else for (const m of g.metadata || []) add(d.group_by_day, m.model, m.spend);
    }
  }
  return series;
}

// ---- charts ----
const colors = ["#2f6fdb", "#1e8a4c", "#d97706", "#c93c37", "#7c3aed", "#0891b2", "#be185d", "#4b5563", "#65a30d", "#9333ea"];
function dayRange(from, to) {
  const out = [];
  for (let d = new Date(from + "T00:00:00Z"); day(d) <= to && out.length < 400; d.setUTCDate(d.getUTCDate() + 1)) out.push(day(d));
  return out;
}
// niceScale picks the y axis: a step of 1, 2 or 5 × 10^k giving at most
// five intervals up to the top of the tallest bar.
function niceScale(v) {
  if (v <= 0) return { max: 1, step: 0.25, digits: 2 };
  const raw = v / 4, p = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map(m => m * p).find(s => s >= raw);
  return { max: Math.ceil(v / step - 1e-9) * step, step, digits: Math.max(0, -Math.floor(Math.log10(step))) };
}
let tip;
function tooltip() {
  if (!tip) { tip = el("div", { className: "tooltip", id: "chart-tooltip" }); tip.hidden = true; document.body.append(tip); }
  return tip;
}
// barChart: stacked bars per day with a y axis in dollars, a date axis, a
// tooltip on hover and a legend; label(id) names each series.
function barChart(title, days, series, label) {
  if (tip) tip.hidden = true; // the bar it described is about to go
  const ids = [...new Set(days.flatMap(d => Object.keys(series[d] || {})))];
  const totals = {};
  for (const id of ids) totals[id] = days.reduce((s, d) => s + ((series[d] || {})[id] || 0), 0);
  ids.sort((a, b) => totals[b] - totals[a]);
  const color = (id) => colors[ids.indexOf(id) % colors.length];
  const w = 900, h = 220, left = 64, bottom = 26, top = 10;
  const scale = niceScale(Math.max(0, ...days.map(d => Object.values(series[d] || {}).reduce((a, b) => a + b, 0))));
  const max = scale.max;
  const svg = svgEl("svg", { viewBox: `0 0 ${w} ${h + bottom + top}`, width: "100%", role: "img", class: "chart-svg" });
  const y = (v) => top + h - h * v / max;
  for (let i = 0; i * scale.step <= max + 1e-12; i++) {
    const v = i * scale.step;
    svg.append(svgEl("line", { x1: left, x2: w - 4, y1: y(v), y2: y(v), class: i ? "grid" : "axis" }));
    const t = svgEl("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" });
    t.textContent = "$" + v.toFixed(scale.digits);
    svg.append(t);
  }
  svg.append(svgEl("line", { x1: left, x2: left, y1: top, y2: top + h, class: "axis" }));
  const slot = (w - left - 8) / Math.max(days.length, 1);
  const bw = Math.max(2, Math.min(48, slot * 0.7));
  const every = Math.ceil(days.length / 12);
  days.forEach((d, i) => {
    const x = left + 4 + i * slot + (slot - bw) / 2;
    let acc = 0;
    const total = Object.values(series[d] || {}).reduce((a, b) => a + b, 0);
    for (const id of ids) {
      const v = (series[d] || {})[id] || 0;
      if (!v) continue;
      const r = svgEl("rect", { x, y: y(acc + v), width: bw, height: Math.max(1, y(acc) - y(acc + v)), fill: color(id), class: "bar-rect" });
      r.dataset.tip = `${d} · ${label(id)}: ${money(v)} (day total ${money(total)})`;
      const t = svgEl("title");
      t.textContent = r.dataset.tip;
      r.append(t);
      svg.append(r);
      acc += v;
    }
    if (i % every === 0) {
      const t = svgEl("text", { x: x + bw / 2, y: top + h + 16, "text-anchor": "middle", class: "tick" });
      t.textContent = d.slice(5);
      svg.append(t);
    }
  });
  svg.addEventListener("mousemove", (ev) => {
    const tt = tooltip();
    if (!ev.target.dataset || !ev.target.dataset.tip) { tt.hidden = true; return; }
    tt.textContent = ev.target.dataset.tip;
    tt.hidden = false;
    // Beside the pointer, on its left near the window's right edge.
    const left = ev.pageX + 12 + tt.offsetWidth > window.scrollX + document.documentElement.clientWidth ? ev.pageX - 12 - tt.offsetWidth : ev.pageX + 12;
    tt.style.left = Math.max(0, left) + "px";
    tt.style.top = (ev.pageY + 12) + "px";
  });
  svg.addEventListener("mouseleave", () => { tooltip().hidden = true; });
  const legend = el("div", { className: "legend" }, ...ids.map(id => {
    const sw = el("span", { className: "swatch" });
    sw.style.background = color(id);
    return el("span", { className: "legend-item" }, sw, `${label(id)} ${money(totals[id])}`);
  }));
  return el("div", { className: "chart" }, el("strong", {}, title), ids.length ? svg : el("p", { className: "muted" }, "No spend in these days."), legend);
}

// ---- overview ----
// requestCounts reads tollgate_requests_total (by model group and HTTP
// status) from /metrics: {total, failed} since this replica started.
async function requestCounts() {
  const resp = await fetch("/metrics", { headers: { "Authorization": "Bearer " + state.key } });
  if (!resp.ok) throw new Error("metrics: " + resp.status);
  let total = 0, failed = 0;
  for (const line of (await resp.text()).split("\n")) {
    const m = line.match(/^tollgate_requests_total\{(.*)\} (\S+)$/);
    if (!m) continue;
    const n = Number(m[2]), status = Number((m[1].match(/status="(\d+)"/) || [])[1] || 0);
    total += n;
    if (status >= 400 || status === 0) failed += n;
  }
  return { total, failed };
}

async function overviewPage(page) {
  const today = daysAgo(0), from = monthStart();
  await loadNames(); // the keys' spend now, for the budget burn
  const [series, logs, models] = await Promise.all([
    dailySpend("api_key", from, today),
    api("GET", `/spend/logs?start_date=${today}&end_date=${today}&summarize=false&size=1000`),
    api("GET", "/model/info").catch(() => ({ data: [] })),
  ]);
  const sum = (d) => Object.values(series[d] || {}).reduce((a, b) => a + b, 0);
  const period = Object.keys(series).reduce((s, d) => s + sum(d), 0);
  // Error rate: an upstream's error leaves no spend row, so admins read the
  // gateway's request counter (this replica, since it started); others
  // the statuses of their own rows today.
  let failed = logs.filter(l => l.status !== "success").length, served = logs.length, scope = "of today's requests";
  if (state.admin) {
    const counts = await requestCounts().catch(() => null);
    if (counts) [served, failed, scope] = [counts.total, counts.failed, "this replica, since it started"];
  }
  const rate = served ? 100 * failed / served : 0;
  const stats = el("div", { className: "stats" },
    card("Spend today", "ov-today", el("div", { className: "big" }, money(sum(today)))),
    card("This month", "ov-period", el("div", { className: "big" }, money(period)), el("div", { className: "muted" }, `since ${from}`)),
    card("Requests today", "ov-requests", el("div", { className: "big" }, String(logs.length)), el("div", { className: "muted" }, logs.length >= 1000 ? "the newest 1,000" : "")),
    card("Error rate", "ov-errors", el("div", { className: "big" + (rate >= 5 ? " error" : "") }, rate.toFixed(1) + "%"), el("div", { className: "muted" }, `${failed} failed of ${served}, ${scope}`)));
  page.append(stats);

  const top = {};
  for (const d of Object.keys(series)) for (const [k, v] of Object.entries(series[d])) top[k] = (top[k] || 0) + v;
  const ranked = Object.entries(top).sort((a, b) => b[1] - a[1]).slice(0, 5);
  const topKeys = table(["Key", "Spend this month"], ranked.map(([k, v]) => row(keyLabel(k), money(v))));
  topKeys.id = "top-keys";

  // Budget burn: the gateway's budget (admins) and the keys nearest theirs.
  const burn = el("div", { id: "budget-burn" });
  if (state.admin) {
    const g = await api("GET", "/global/spend");
    burn.append(el("div", { className: "burn-row" }, el("span", { className: "burn-name" }, "Gateway"), budgetBar(g.spend || 0, g.max_budget)));
  }
  const budgeted = names.keyList.filter(k => k.max_budget != null).map(k => [k, (k.spend || 0) / Math.max(k.max_budget, 1e-12)]).sort((a, b) => b[1] - a[1]).slice(0, 5);
  for (const [k] of budgeted) burn.append(el("div", { className: "burn-row" }, el("span", { className: "burn-name" }, keyLabel(k.token)), budgetBar(k.spend || 0, k.max_budget),
    k.budget_duration ? el("span", { className: "muted" }, ` per ${k.budget_duration}`) : ""));
  if (!burn.childNodes.length) burn.append(el("p", { className: "muted" }, "No key has a budget."));

  const cooling = (models.data || []).filter(m => m.model_info.cooldown_until || m.model_info.healthy === false);
  const cool = table(["Model", "Deployment", "State"], cooling.map(m => row(m.model_name, m.model_info.id,
    m.model_info.cooldown_until ? "cooling down until " + new Date(m.model_info.cooldown_until).toLocaleTimeString() : m.model_info.disabled ? "disabled: " + m.model_info.disabled_reason : "failing health checks")));
  cool.id = "cooldowns";
  page.append(el("div", { className: "cols" },
    card("Top keys this month", "ov-top", topKeys),
    card("Budget burn", "ov-burn", burn)),
  card("Cooldowns and unhealthy deployments", "ov-cool", cooling.length ? cool : el("p", { className: "muted", id: "cooldowns" }, `All ${(models.data || []).length} deployments serving.`)));
  page.append(barChart("Spend per day this month by key", dayRange(from, today), series, keyLabel));
}

// ---- keys ----
function field(name, label, type = "text", extra = {}) {
  const id = "f-" + name;
  const input = type === "textarea" ? el("textarea", Object.assign({ name, id, rows: 2 }, extra)) : el("input", Object.assign({ name, id, type }, extra));
  return el("label", { htmlFor: id }, label, input);
}
function selectField(name, label, options) {
  return el("label", {}, label, el("select", { name, id: "f-" + name }, ...options.map(([v, t]) => el("option", { value: v }, t))));
}
function checkField(name, label) {
  return el("label", { className: "check" }, el("input", { type: "checkbox", name, id: "f-" + name }), el("span", {}, label));
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

// Keys: the fields most people set, then every other /key/generate field
// of LiteLLM's docs under "Advanced".
const keySpec = { key_alias: "text", key: "text", duration: "text", models: "list", max_budget: "number", budget_duration: "text",
  soft_budget: "number", tpm_limit: "number", rpm_limit: "number", max_parallel_requests: "number", user_id: "text", team_id: "text",
  tags: "list", spend: "number", blocked: "bool", metadata: "json", aliases: "json", config: "json",
  model_max_budget: "json", model_rpm_limit: "json", model_tpm_limit: "json" };

function copyButton(text) {
  const status = el("span", { className: "muted", id: "copy-status" });
  const btn = el("button", { type: "button", id: "copy-key", className: "quiet" }, "Copy");
  btn.onclick = async () => {
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) {
      // No clipboard permission (a non-secure page, a headless browser):
      // copy the selected text the old way.
      const range = document.createRange();
      range.selectNodeContents($("#new-key-value"));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      if (!document.execCommand("copy")) { status.textContent = "Select the key and copy it by hand."; return; }
    }
    status.textContent = "Copied to the clipboard.";
  };
  return [btn, " ", status];
}

// showKeyOnce puts a new key (generated, regenerated, or a new user's) in
// banner, with a copy button; it is in the page only, never stored, and
// gone when the banner is dismissed or the page left.
function showKeyOnce(banner, title, key) {
  const dismiss = el("button", { type: "button", className: "link-dark", onclick: () => banner.replaceChildren() }, "Done, hide it");
  banner.replaceChildren(el("div", { className: "banner", id: "new-key" },
    el("div", {}, el("strong", {}, title), " It is shown only this once: copy it now."),
    el("div", { className: "new-key-line" }, el("code", { id: "new-key-value" }, key), " ", ...copyButton(key)), dismiss));
}

async function keysPage(page) {
  const banner = el("div", { id: "key-banner" });
  page.append(banner);
  const list = el("div", { id: "key-list" });
  if (state.writes) {
    const teamOpts = [["", state.admin ? "no team" : "no team / type below"], ...names.teamList.map(t => [t.team_id, t.team_alias || t.team_id])];
    const userOpts = state.admin ? [["", "no user"], ...names.userList.map(u => [u.user_id, names.users[u.user_id]])] : [[state.userId, state.who]];
    const form = el("form", { className: "grid", id: "key-form" },
      field("key_alias", "Alias", "text", { placeholder: "billing-service" }), field("models", "Models (comma-separated, empty: all)"),
      field("max_budget", "Max budget ($)", "number", { step: "any", min: 0 }),
      selectField("budget_duration", "Budget resets", [["", "never"], ["1d", "daily"], ["7d", "weekly"], ["30d", "every 30 days"], ["1mo", "monthly"]]),
      state.admin ? selectField("team_id", "Team", teamOpts) : field("team_id", "Team id"),
      selectField("user_id", "User", userOpts),
      field("duration", "Expires after (1h, 7d; empty: never)"),
      el("details", { className: "advanced", id: "key-advanced" }, el("summary", {}, "Advanced: limits, tags, metadata, per-model budgets"),
        el("div", { className: "grid-inner" },
          field("soft_budget", "Soft budget ($)", "number", { step: "any" }), field("rpm_limit", "RPM limit", "number"), field("tpm_limit", "TPM limit", "number"),
          field("max_parallel_requests", "Max parallel requests", "number"), field("tags", "Tags (comma-separated)"), field("key", "Custom key (sk-...)"),
          ...(state.admin ? [field("spend", "Starting spend ($)", "number", { step: "any" })] : []),
          field("metadata", "Metadata (JSON)", "textarea"), ...(state.admin ? [field("aliases", "Model aliases (JSON)", "textarea"), field("config", "Config (JSON)", "textarea")] : []),
          field("model_max_budget", "Per-model budgets (JSON)", "textarea"), field("model_rpm_limit", "Per-model RPM (JSON)", "textarea"),
          field("model_tpm_limit", "Per-model TPM (JSON)", "textarea"), ...(state.admin ? [checkField("blocked", "Create it blocked")] : []))),
      el("div", { className: "actions" }, el("button", { type: "submit", id: "create-key" }, "Create key")));
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      try {
        const k = await api("POST", "/key/generate", formValues(form, keySpec));
        showKeyOnce(banner, `Key ${k.key_alias ? "“" + k.key_alias + "” " : ""}created.`, k.key);
        form.reset();
        await loadNames();
        await listKeys(list);
      } catch (e) { banner.replaceChildren(el("p", { className: "error" }, e.message)); }
    };
    page.append(form);
  }
  const search = el("input", { placeholder: "search by alias", id: "key-search" });
  search.oninput = () => listKeys(list, search.value);
  page.append(el("div", { className: "toolbar" }, search), list);
  await listKeys(list);
}

async function listKeys(list, alias = "") {
  const q = "/key/list?return_full_object=true&size=200" + (alias ? "&key_alias=" + encodeURIComponent(alias) : "");
  const data = await api("GET", q);
  const rows = data.keys.map(k => {
    const actions = el("span", { className: "actions-cell" });
    if (state.writes) {
      const act = (label, fn, cls = "quiet") => actions.append(el("button", { className: cls + " small", onclick: async () => { try { await fn(); await listKeys(list, alias); } catch (e) { fail(e); } } }, label), " ");
      act(k.blocked ? "Unblock" : "Block", () => api("POST", k.blocked ? "/key/unblock" : "/key/block", { key: k.token }));
      act("Regenerate", async () => {
        const r = await api("POST", "/key/regenerate", { key: k.token });
        showKeyOnce($("#key-banner"), `Key ${k.key_alias ? "“" + k.key_alias + "” " : ""}regenerated; the old key no longer works.`, r.key);
      });
      act("Delete", () => confirm("Delete this key?") && api("POST", "/key/delete", { keys: [k.token] }), "danger");
    }
    const tr = el("tr", { className: "key-row" },
      el("td", { className: "alias" }, k.key_alias || el("span", { className: "muted" }, "—")), el("td", {}, el("code", {}, k.key_name)),
      el("td", {}, userLabel(k.user_id)), el("td", {}, teamLabel(k.team_id)), el("td", {}, (k.models || []).join(", ") || "all"),
      el("td", { className: "spend" }, budgetBar(k.spend || 0, k.max_budget)), el("td", {}, k.budget_duration || ""),
      el("td", {}, k.expires ? new Date(k.expires).toLocaleDateString() : "never"), el("td", {}, k.blocked ? "blocked" : ""), el("td", {}, actions));
    tr.dataset.alias = k.key_alias || "";
    return tr;
  });
  list.replaceChildren(table(["Alias", "Key", "User", "Team", "Models", "Spend / budget", "Resets", "Expires", "", ""], rows),
    el("p", { className: "muted" }, `${data.total_count} keys`));
}

// ---- spend ----
async function spendPage(page) {
  const from = el("input", { type: "date", id: "spend-from", value: daysAgo(29) });
  const to = el("input", { type: "date", id: "spend-to", value: daysAgo(0) });
  const group = el("select", { id: "spend-group" }, ...groupsFor().map(g => el("option", { value: g }, "by " + groupNames[g])));
  const out = el("div", { id: "spend-out" });
  const preset = (label, f, t) => el("button", { type: "button", className: "quiet small", onclick: () => { from.value = f(); to.value = t(); draw(); } }, label);
  // Each draw reads the range and grouping when it starts; one started
  // later owns the page, so a slower answer to an earlier choice (setting
  // "from" then "to" fires two) never overwrites it with the wrong range.
  let draws = 0;
  const draw = async () => {
    const mine = ++draws, f = from.value, t = to.value, g = group.value;
    out.replaceChildren(el("p", { className: "muted" }, "loading…"));
    try {
      if (f > t) throw new Error("The start date is after the end date.");
      const series = await dailySpend(g, f, t);
      if (mine !== draws) return;
      const label = (id) => groupLabel(g, id);
      const totals = {};
      for (const d of Object.keys(series)) for (const [k, v] of Object.entries(series[d])) totals[k] = (totals[k] || 0) + v;
      const sum = Object.values(totals).reduce((a, b) => a + b, 0);
      const ranked = Object.entries(totals).sort((a, b) => b[1] - a[1]).slice(0, 10);
      const top = table([groupNames[g][0].toUpperCase() + groupNames[g].slice(1), "Spend", "Share"], ranked.map(([k, v]) => row(label(k), money(v), sum ? (100 * v / sum).toFixed(1) + "%" : "")));
      top.id = "top-spenders";
      out.replaceChildren(el("p", { id: "range-spend" }, `Spend ${f} to ${t}: `, el("strong", {}, money(sum))),
        barChart(`Spend per day by ${groupNames[g]}`, dayRange(f, t), series, label),
        el("h3", {}, `Top spenders by ${groupNames[g]}`), top);
    } catch (e) { if (mine === draws) out.replaceChildren(el("p", { className: "error" }, e.message)); }
  };
  for (const i of [from, to, group]) i.onchange = draw;
  page.append(el("div", { className: "toolbar", id: "spend-toolbar" }, el("label", { className: "inline" }, "From ", from), el("label", { className: "inline" }, "to ", to),
    preset("7 days", () => daysAgo(6), () => daysAgo(0)), preset("30 days", () => daysAgo(29), () => daysAgo(0)), preset("This month", monthStart, () => daysAgo(0)),
    el("label", { className: "inline" }, "Group ", group)), out);
  if (state.admin) {
    const total = await api("GET", "/global/spend");
    page.prepend(el("p", { id: "total-spend" }, "Total spend: ", el("strong", {}, money(total.spend)), total.max_budget != null ? " of " + money(total.max_budget) : ""));
    page.prepend(page.querySelector("h2"));
  }
  await draw();
  if (!state.admin) return;
  // By request tag (x-litellm-tags, metadata.tags, key and team tags): a
  // request with several tags counts under each.
  const tags = await api("GET", "/spend/tags");
  const byTag = table(["Tag", "Requests", "Spend"], tags.map(t => row(t.individual_request_tag, String(t.log_count), money(t.total_spend))));
  byTag.id = "tag-spend";
  page.append(el("h3", {}, "Spend by tag, all time"), tags.length ? byTag : el("p", { className: "muted", id: "tag-spend" }, "No tagged requests yet."));
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
  const prev = el("button", { className: "quiet small", onclick: () => { if (n > 1) { n--; go(); } } }, "← Newer");
  const next = el("button", { className: "quiet small", onclick: () => { n++; go(); } }, "Older →");
  const label = el("span", { className: "muted" });
  // Only the latest load is shown: filters changed quickly send several,
  // and one answered late must not replace a newer one's rows.
  let latest = 0;
  const go = () => {
    const seq = ++latest;
    load(n).then(([content, more]) => {
      if (seq !== latest) return;
      body.replaceChildren(content); label.textContent = "page " + n; next.disabled = !more; prev.disabled = n === 1;
    }).catch((e) => { if (seq === latest) fail(e); });
  };
  page.append(el("div", { className: "toolbar" }, prev, label, next), body);
  go();
  return () => { n = 1; go(); };
}

// What the guardrails did to a request: "name: action (ENTITY×n, ...)",
// one per guardrail run; never the text they found.
function guardrailSummary(l) {
  return (l.guardrails || []).filter(g => g.action !== "passed").map(g => {
    const ents = Object.entries(g.entities || {}).map(([e, n]) => `${e}×${n}`).join(", ");
    return `${g.guardrail}: ${g.action}` + (ents ? ` (${ents})` : "");
  }).join("; ");
}

// errorSummary is a failed request's error_information in one line ("" for
// a success): class, code, provider, message.
function errorSummary(l) {
  const e = (l.metadata || {}).error_information;
  if (!e) return "";
  return `${e.error_class} (${e.error_code}${e.llm_provider ? ", " + e.llm_provider : ""})` + (e.error_message ? ": " + e.error_message : "");
}

// A request's detail: every field of its row, its metadata, and the
// messages and response when store_prompts_in_spend_logs kept them.
function logDetail(l) {
  const shown = (v) => v && (Array.isArray(v) ? v.length : Object.keys(v).length);
  const facts = [["Request id", l.request_id], ["Call id", l.call_id], ["Time", new Date(l.startTime).toLocaleString()], ["Key", keyLabel(l.api_key)],
    ["User", userLabel(l.user)], ["Team", teamLabel(l.team_id)], ["End user", l.end_user], ["Model", l.model_group], ["Upstream model", l.model], ["Deployment", l.model_id],
    ["Provider", l.custom_llm_provider], ["API base", l.api_base], ["Call type", l.call_type], ["HTTP status", String(l.http_status)], ["Latency", l.latency_ms + " ms"],
    ["Tokens", `${l.prompt_tokens} in, ${l.completion_tokens} out, ${l.cached_tokens} cached`], ["Cost", money(l.spend)],
    ["Cache", l.cache_hit === "True" ? "hit, saved " + money(l.saved_cache_cost || 0) : "miss"], ["Tags", (l.request_tags || []).join(", ")], ["Guardrails", guardrailSummary(l)], ["Error", errorSummary(l)]];
  const parts = [];
  const md = (l.metadata || {}).requester_metadata;
  if (shown(md)) parts.push(["Metadata", md]);
  if (shown(l.messages)) parts.push(["Messages", l.messages]);
  if (shown(l.response)) parts.push(["Response", l.response]);
  return el("div", { className: "log-detail", id: "log-detail" },
    el("div", { className: "detail-head" }, el("strong", {}, "Request " + l.request_id), el("button", { type: "button", className: "quiet small", id: "close-detail", onclick: (ev) => ev.target.closest(".log-detail").remove() }, "Close")),
    el("dl", {}, ...facts.filter(([, v]) => v).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    ...parts.flatMap(([name, v]) => [el("strong", {}, name), el("pre", {}, JSON.stringify(v, null, 2))]),
    parts.length ? "" : el("p", { className: "muted" }, "No metadata, messages or response stored for this request (store_prompts_in_spend_logs)."));
}

async function logsPage(page) {
  const opt = (v, t) => el("option", { value: v }, t);
  const models = await api("GET", "/model/info").then(m => [...new Set(m.data.map(d => d.model_name))]).catch(() => []);
  const f = {
    api_key: el("select", { id: "flt-key" }, opt("", "any key"), ...names.keyList.map(k => opt(k.token, keyLabel(k.token)))),
    user_id: state.admin ? el("select", { id: "flt-user" }, opt("", "any user"), ...names.userList.map(u => opt(u.user_id, userLabel(u.user_id)))) : null,
    team_id: state.admin ? el("select", { id: "flt-team" }, opt("", "any team"), ...names.teamList.map(t => opt(t.team_id, teamLabel(t.team_id)))) : null,
    model: el("select", { id: "flt-model" }, opt("", "any model"), ...models.map(m => opt(m, m))),
    status: el("select", { id: "flt-status" }, opt("", "any status"), opt("success", "succeeded"), opt("failure", "failed")),
    start_date: el("input", { type: "date", id: "flt-from" }),
    end_date: el("input", { type: "date", id: "flt-to" }),
  };
  const detail = el("div");
  page.append(el("div", { className: "toolbar filters", id: "log-filters" }, ...Object.entries(f).filter(([, i]) => i).map(([name, i]) =>
    name === "start_date" ? el("label", { className: "inline" }, "From ", i) : name === "end_date" ? el("label", { className: "inline" }, "to ", i) : i)));
  const reset = pager(page, async (n) => {
    const q = new URLSearchParams({ page: n, size: 50, summarize: "false" });
    for (const [name, i] of Object.entries(f)) if (i && i.value) q.set(name, i.value);
    const data = await api("GET", "/spend/logs?" + q);
    return [table(["Time", "Key", "User", "Team", "Model", "Tokens in/out", "Cost", "Status", "Latency", "Tags", "Guardrails", "Cache"], data.map(l => {
      const status = el("span", { className: "status " + (l.status === "success" ? "ok" : "failed") }, String(l.http_status));
      const r = row(new Date(l.startTime).toLocaleString(), keyLabel(l.api_key), userLabel(l.user), teamLabel(l.team_id), l.model_group,
        `${l.prompt_tokens} / ${l.completion_tokens}`, money(l.spend), status, l.latency_ms + " ms", (l.request_tags || []).join(", "), guardrailSummary(l),
        l.cache_hit === "True" ? "hit, saved " + money(l.saved_cache_cost || 0) : "");
      r.className = "log-row";
      r.title = "Show this request";
      r.cells[0].className = "nowrap";
      r.cells[1].className = "key nowrap";
      r.cells[9].className = "tags";
      r.cells[10].className = "guardrails";
      r.onclick = () => { detail.replaceChildren(logDetail(l)); detail.scrollIntoView({ block: "nearest" }); };
      return r;
    })), data.length === 50];
  });
  page.append(detail);
  for (const i of Object.values(f)) if (i) i.onchange = () => { detail.replaceChildren(); reset(); };
}

// ---- admin pages ----
async function usersPage(page) {
  page.append(el("div", { id: "user-banner" }));
  if (state.writes) {
    const form = el("form", { className: "grid", id: "user-form" }, field("user_id", "User id"), field("user_email", "Email"), field("user_alias", "Alias"),
      selectField("user_role", "Role", ["internal_user", "internal_user_viewer", "proxy_admin", "proxy_admin_viewer"].map(r => [r, r])),
      field("max_budget", "Max budget ($)", "number", { step: "any" }), el("div", { className: "actions" }, el("button", { type: "submit" }, "Create user")));
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      try {
        const u = await api("POST", "/user/new", Object.assign(formValues(form, { user_id: "text", user_email: "text", user_alias: "text", max_budget: "number" }), { user_role: form.elements.user_role.value }));
        await loadNames(); await route();
        showKeyOnce($("#user-banner"), `User ${u.user_alias || u.user_email || u.user_id} created with a key.`, u.key);
      } catch (e) { fail(e); }
    };
    page.append(form);
  }
  const data = await api("GET", "/user/list?size=200");
  page.append(table(["User", "Email", "Role", "Teams", "Spend / budget"], (data.users || []).map(u => row(u.user_alias || u.user_id, u.user_email || "", u.user_role || "",
    (u.teams || []).map(teamLabel).join(", "), budgetBar(u.spend || 0, u.max_budget)))));
}

async function teamsPage(page) {
  if (state.writes) {
    const form = el("form", { className: "grid" }, field("team_id", "Team id"), field("team_alias", "Alias"), field("max_budget", "Max budget ($)", "number", { step: "any" }),
      field("budget_duration", "Budget period"), field("rpm_limit", "RPM limit", "number"), field("models", "Models (comma-separated)"),
      el("div", { className: "actions" }, el("button", { type: "submit" }, "Create team")));
    form.onsubmit = async (ev) => { ev.preventDefault(); try { await api("POST", "/team/new", formValues(form, { team_id: "text", team_alias: "text", max_budget: "number", budget_duration: "text", rpm_limit: "number", models: "list" })); await loadNames(); route(); } catch (e) { fail(e); } };
    page.append(form);
  }
  const data = await api("GET", "/team/list");
  const teams = Array.isArray(data) ? data : (data.teams || []);
  page.append(table(["Team", "Id", "Members", "Spend / budget", "Models", ""], teams.map(t =>
    row(t.team_alias || t.team_id, el("code", {}, t.team_id), (t.members_with_roles || []).map(m => `${userLabel(m.user_id) || m.user_email} (${m.role})`).join(", "), budgetBar(t.spend || 0, t.max_budget), (t.models || []).join(", ") || "all", t.blocked ? "blocked" : ""))));
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
  const status = (i) => i.cooldown_until ? "cooling down until " + new Date(i.cooldown_until).toLocaleTimeString() : i.disabled ? "disabled: " + i.disabled_reason : i.healthy === false ? "failing health checks" : "serving";
  const price = (i) => i.input_cost_per_token != null ? `$${(i.input_cost_per_token * 1e6).toFixed(2)} / $${(i.output_cost_per_token * 1e6).toFixed(2)} per 1M` : "";
  page.append(table(["Model", "Deployment", "Upstream", "Price in / out", "Limits", "State", "Source"], data.data.map(m => row(m.model_name, m.model_info.id,
    m.litellm_params.model + (m.litellm_params.api_base ? " @ " + m.litellm_params.api_base : ""), price(m.model_info),
    ["rpm", "tpm", "weight", "order"].filter(f => m.litellm_params[f] != null).map(f => `${f} ${m.litellm_params[f]}`).join(", "),
    status(m.model_info), m.model_info.db_model ? "API" : "config"))));
  if (state.admin) page.append(el("div", { className: "toolbar" }, check), health);
}

async function guardrailsPage(page) {
  const data = await api("GET", "/guardrails/list");
  page.append(table(["Name", "Kind", "Mode", "Default on", "Active"], (data.guardrails || []).map(g => {
    const p = g.litellm_params || {};
    return row(g.guardrail_name, p.guardrail || "", (p.mode || []).join(", "), p.default_on ? "yes" : "no", g.active ? "yes" : "inactive (kind not served)");
  })));
}

// An audit entry's change: the fields whose value differs between
// before_value and updated_values, each old and new.
function auditDiff(a) {
  const parse = (s) => { try { return s ? JSON.parse(s) : {}; } catch (_) { return { value: s }; } };
  const before = parse(a.before_value), after = parse(a.updated_values);
  const fmt = (v) => v === undefined ? "" : typeof v === "string" ? v : JSON.stringify(v);
  const fields = [...new Set([...Object.keys(before), ...Object.keys(after)])].filter(k => fmt(before[k]) !== fmt(after[k])).sort();
  const rows = fields.map(k => el("tr", {}, el("td", {}, el("code", {}, k)), el("td", { className: "diff-before" }, fmt(before[k])), el("td", { className: "diff-after" }, fmt(after[k]))));
  return [fields.length, el("table", { className: "diff" }, el("thead", {}, el("tr", {}, el("th", {}, "Field"), el("th", {}, "Before"), el("th", {}, "After"))), el("tbody", {}, ...rows))];
}

async function auditPage(page) {
  pager(page, async (n) => {
    const data = await api("GET", `/audit/list?page=${n}&size=50`);
    return [table(["Time", "Actor", "Action", "Object", "Changes"], (data.audit_logs || []).map(a => {
      const obj = a.table_name === "key" ? keyLabel(a.object_id) : a.table_name === "user" ? userLabel(a.object_id) : a.table_name === "team" ? teamLabel(a.object_id) : a.object_id;
      const [count, diff] = auditDiff(a);
      const r = row(new Date(a.updated_at).toLocaleString(), keyLabel(a.changed_by), a.action, `${a.table_name} ${obj}`,
        count ? el("details", { className: "audit-diff" }, el("summary", {}, `${count} field${count === 1 ? "" : "s"}`), diff) : el("span", { className: "muted" }, "—"));
      r.className = "audit-row";
      return r;
    })), n * 50 < data.total_count];
  });
}

if (state.key) signIn(state.key);
