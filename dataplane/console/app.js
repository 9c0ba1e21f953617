// Sluice console: one ES module, no libraries. It reads the project's JSON APIs with the key the
// user signed in with (kept in sessionStorage, sent as a Bearer header) and draws charts in SVG.
// Every value from the server goes into the page as text, never as HTML.

const project = decodeURIComponent(location.pathname.split("/")[1] || "");
const api = (path) => `/${encodeURIComponent(project)}/v1${path}`;
const storageKey = `sluice.console.key.${project}`;
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

let key = "";
let me = null;
let catalog = null;
let healthTimer = 0;
const healthHistory = new Map();

/** An element with attributes and children (strings become text). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "on") for (const [ev, fn] of Object.entries(value)) el.addEventListener(ev, fn);
    else if (name === "text") el.textContent = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) if (child !== null && child !== undefined) el.append(child);
  return el;
}

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, value);
  for (const child of children.flat(Infinity)) el.append(child);
  return el;
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Calls a project API with the signed-in key; throws ApiError with the gateway's message. */
async function call(path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(api(path), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!res.ok) {
    const err = data && data.error ? data.error : {};
    throw new ApiError(res.status, err.code || "", err.message || `HTTP ${res.status}`);
  }
  return data;
}

const usd = (v) => (v === null || v === undefined ? "—" : `$${Number(v).toFixed(v !== 0 && Math.abs(v) < 0.01 ? 6 : 2)}`);
const num = (v) => (v === null || v === undefined ? "—" : Number(v).toLocaleString("en-US"));
const ms = (v) => (v === null || v === undefined ? "—" : `${Math.round(v)} ms`);
const pct = (v) => (v === null || v === undefined ? "—" : `${(v * 100).toFixed(1)}%`);
const has = (scope) => me && me.scopes.includes(scope);

// ---- Sign-in -------------------------------------------------------------------------------

function signInMessage(error) {
  if (error.status === 401) return "This key was not accepted: it is unknown or has expired. Check that you pasted the whole key.";
  if (error.status === 404) return `This key does not belong to project “${project}”.`;
  if (error.status === 403) return `This key may not be used from here: ${error.message}`;
  return `Sign-in failed: ${error.message}`;
}

async function signIn(candidate) {
  key = candidate;
  me = await call("/keys/self");
  sessionStorage.setItem(storageKey, key);
  $("signin").hidden = true;
  $("app").hidden = false;
  $("signout").hidden = false;
  $("project-name").textContent = `· ${project}`;
  $("whoami").textContent = `Signed in as ${me.id} (${me.scopes.join(", ") || "no scopes"})`;
  $("tab-keys").hidden = !has("management");
  catalog = await call("/catalog");
  renderModels();
  fillPlayground();
  select("tab-models");
}

function signOut() {
  sessionStorage.removeItem(storageKey);
  key = "";
  me = null;
  clearInterval(healthTimer);
  location.reload();
}

// ---- Tabs (WAI-ARIA tabs pattern: arrows move, Enter/Space or click selects) ----------------

function tabs() {
  return [...document.querySelectorAll('[role="tab"]')].filter((t) => !t.hidden);
}

function select(id) {
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    const on = tab.id === id;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $(tab.getAttribute("aria-controls")).hidden = !on;
  }
  clearInterval(healthTimer);
  if (id === "tab-usage") renderUsage();
  if (id === "tab-keys") renderKeys();
  if (id === "tab-health") {
    renderHealth();
    healthTimer = setInterval(renderHealth, 5000);
  }
}

function tabKeys(event) {
  const list = tabs();
  const at = list.indexOf(event.target);
  if (at < 0) return;
  let next = null;
  if (event.key === "ArrowRight") next = list[(at + 1) % list.length];
  if (event.key === "ArrowLeft") next = list[(at - 1 + list.length) % list.length];
  if (event.key === "Home") next = list[0];
  if (event.key === "End") next = list[list.length - 1];
  if (next) {
    event.preventDefault();
    next.focus();
    select(next.id);
  }
}

// ---- Models and prices -----------------------------------------------------------------------

function snippets(base, model) {
  return {
    curl: `curl ${base}/chat/completions \\\n  -H "Authorization: Bearer $SLUICE_API_KEY" \\\n  -H "Content-Type: application/json" \\\n  -d '{"model": "${model}", "messages": [{"role": "user", "content": "Hello"}]}'`,
    Python: `import os\nfrom openai import OpenAI\n\nclient = OpenAI(base_url="${base}", api_key=os.environ["SLUICE_API_KEY"])\nreply = client.chat.completions.create(\n    model="${model}", messages=[{"role": "user", "content": "Hello"}])\nprint(reply.choices[0].message.content)`,
    Node: `import OpenAI from "openai";\n\nconst client = new OpenAI({ baseURL: "${base}", apiKey: process.env.SLUICE_API_KEY });\nconst reply = await client.chat.completions.create({\n  model: "${model}", messages: [{ role: "user", content: "Hello" }] });\nconsole.log(reply.choices[0].message.content);`,
  };
}

function copyButton(text, label) {
  return h("button", { type: "button", class: "secondary", "aria-label": label, on: { click: async (e) => {
    try { await navigator.clipboard.writeText(text); e.target.textContent = "Copied"; } catch { e.target.textContent = "Select and copy"; }
  } } }, "Copy");
}

function price(p, multiplier) {
  if (!p) return "—";
  const m = multiplier ?? 1;
  return `${usd(p.input_per_million * m)} in · ${usd(p.cached_input_per_million * m)} cached · ${usd(p.output_per_million * m)} out`;
}

function renderModels() {
  const panel = $("panel-models");
  panel.replaceChildren(h("h2", {}, "Endpoints and models"));
  if (!catalog.endpoints.length) panel.append(h("p", {}, "This key opens no endpoint of the project."));
  for (const endpoint of catalog.endpoints) {
    const base = `${location.origin}${endpoint.path}`;
    const rows = endpoint.models.map((m) => h("tr", { "data-model": m.id },
      h("td", {}, h("strong", {}, m.id), m.aliases.length ? h("div", { class: "hint" }, `aliases: ${m.aliases.map((a) => a.name + (a.sunset ? ` (until ${a.sunset.slice(0, 10)})` : "")).join(", ")}`) : null),
      h("td", {}, m.capabilities.join(", ")),
      h("td", { class: "num" }, num(m.context_window)),
      h("td", { class: "num hide-narrow" }, num(m.max_output_tokens)),
      h("td", { class: "price" }, price((m.backends.find((b) => b.pricing) || {}).pricing, endpoint.tier.price_multiplier))));
    const chat = endpoint.models.find((m) => m.capabilities.includes("chat"));
    const code = chat ? snippets(base, chat.id) : null;
    panel.append(h("article", { class: "card", "aria-labelledby": `ep-${endpoint.slug}` },
      h("h3", { id: `ep-${endpoint.slug}` }, `Endpoint ${endpoint.slug}`),
      h("div", { class: "row" }, h("span", {}, "Base URL "), h("code", { class: "base-url" }, base), copyButton(base, `Copy the base URL of ${endpoint.slug}`)),
      h("p", { class: "hint" }, `APIs: ${endpoint.apis.join(", ")} · tier ${endpoint.tier.name}: ${num(endpoint.tier.requests_per_minute)} requests/min, ${num(endpoint.tier.tokens_per_minute)} tokens/min; prices per million tokens${endpoint.tier.price_multiplier !== 1 ? ` × ${endpoint.tier.price_multiplier}` : ""}.`),
      h("div", { class: "scroll" }, h("table", { class: "models" },
        h("caption", { class: "hint" }, `Models of ${endpoint.slug} this key may use`),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Model"), h("th", { scope: "col" }, "Capabilities"),
          h("th", { scope: "col", class: "num" }, "Context"), h("th", { scope: "col", class: "num hide-narrow" }, "Max output"),
          h("th", { scope: "col" }, "Price per 1M tokens"))),
        h("tbody", {}, rows))),
      code ? h("details", {}, h("summary", {}, `Snippets for ${chat.id}`),
        Object.entries(code).map(([lang, text]) => [h("h4", {}, lang), h("pre", { tabindex: "0", "aria-label": `${lang} snippet` }, text), copyButton(text, `Copy the ${lang} snippet`)])) : null));
  }
}

// ---- Usage -----------------------------------------------------------------------------------

/** A stacked bar chart of `rows` (date, series, value) over `days`, with a legend and a table. */
function barChart(title, days, rows, field, format) {
  const series = [...new Set(rows.map((r) => r.series))];
  const width = 640, height = 220, left = 56, bottom = 28, top = 10;
  const totals = days.map((d) => rows.filter((r) => r.date === d).reduce((a, r) => a + r[field], 0));
  const max = Math.max(...totals, 0) || 1;
  const bar = (width - left - 8) / days.length;
  const y = (v) => top + (height - top - bottom) * (1 - v / max);
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `${title}: ${format(totals.reduce((a, b) => a + b, 0))} in ${days.length} days` });
  svg.append(s("line", { class: "axis", x1: left, x2: width, y1: y(0), y2: y(0) }));
  for (const tick of [0, max / 2, max]) {
    const label = s("text", { x: left - 6, y: y(tick) + 4, "text-anchor": "end" });
    label.textContent = format(tick);
    svg.append(label, s("line", { class: "axis", x1: left, x2: width, y1: y(tick), y2: y(tick), "stroke-dasharray": "2 4" }));
  }
  days.forEach((day, i) => {
    let base = 0;
    for (const [k, name] of series.entries()) {
      const v = rows.filter((r) => r.date === day && r.series === name).reduce((a, r) => a + r[field], 0);
      if (!v) continue;
      const rect = s("rect", { class: `c${k % 6}`, x: left + i * bar + 2, width: Math.max(bar - 4, 1), y: y(base + v), height: Math.max(y(base) - y(base + v), 1) });
      const tip = s("title");
      tip.textContent = `${day} · ${name}: ${format(v)}`;
      rect.append(tip);
      svg.append(rect);
      base += v;
    }
    if (days.length <= 16 || i % 3 === 0) {
      const label = s("text", { x: left + i * bar + bar / 2, y: height - 8, "text-anchor": "middle" });
      label.textContent = day.slice(5);
      svg.append(label);
    }
  });
  const legend = h("ul", { class: "legend" }, series.map((name, k) => h("li", {}, h("span", { class: `swatch c${k % 6}`, "aria-hidden": "true" }), name)));
  const table = h("details", {}, h("summary", {}, `${title} as a table`), h("div", { class: "scroll" }, h("table", {},
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Day"), h("th", { scope: "col" }, "Series"), h("th", { scope: "col", class: "num" }, title))),
    h("tbody", {}, rows.filter((r) => r[field]).map((r) => h("tr", {}, h("td", {}, r.date), h("td", {}, r.series), h("td", { class: "num" }, format(r[field]))))))));
  return h("figure", { class: "figure", "data-total": String(totals.reduce((a, b) => a + b, 0)) }, h("figcaption", {}, h("strong", {}, title)), svg, legend, table);
}

function totalsTable(caption, label, groups, field) {
  return h("div", { class: "scroll" }, h("table", { class: "top" }, h("caption", { class: "hint" }, caption),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, label), h("th", { scope: "col", class: "num" }, "Requests"),
      h("th", { scope: "col", class: "num" }, "Input tokens"), h("th", { scope: "col", class: "num" }, "Output tokens"), h("th", { scope: "col", class: "num" }, "Cost"))),
    h("tbody", {}, groups.map((g) => h("tr", {}, h("td", {}, g[field]), h("td", { class: "num" }, num(g.requests)),
      h("td", { class: "num" }, num(g.input_tokens)), h("td", { class: "num" }, num(g.output_tokens)), h("td", { class: "num" }, usd(g.cost_usd)))))));
}

async function renderUsage() {
  const panel = $("panel-usage");
  try {
    me = await call("/keys/self");
    const mine = await call("/keys/self/daily?days=14");
    const u = me.usage;
    const budget = me.budget;
    const parts = [
      h("h2", {}, "Usage of this key"),
      h("dl", { class: "stats" },
        h("dt", {}, "Limits"), h("dd", {}, `${num(me.limits.requests_per_minute)} requests/min · ${num(me.limits.tokens_per_minute)} tokens/min · ${num(me.limits.max_concurrent)} at once (tier ${me.tier.name})`),
        h("dt", {}, `This ${u.period.kind} period`), h("dd", { id: "usage-total" }, `${num(u.requests)} requests · ${num(u.input_tokens)} in / ${num(u.output_tokens)} out tokens · ${usd(u.cost_usd)}`),
        h("dt", {}, "Budget"), h("dd", {}, budget ? `${usd(budget.remaining_usd)} left of ${usd(budget.limit_usd)} (${budget.period})` : "no budget")),
      barChart("Requests by day and model", mine.days, mine.data.map((r) => ({ ...r, series: r.model })), "requests", num),
      barChart("Cost by day and model", mine.days, mine.data.map((r) => ({ ...r, series: r.model })), "cost_usd", usd),
      totalsTable("This key's last 14 days by model", "Model", mine.by_model, "model"),
    ];
    if (has("usage.read")) {
      const all = await call("/usage/daily?days=14");
      parts.push(h("h2", {}, "Every key of the project"),
        barChart("Project cost by day and key", all.days, all.data.map((r) => ({ ...r, series: r.key_id })), "cost_usd", usd),
        totalsTable("Top keys by spend, last 14 days", "Key", all.by_key.slice(0, 10), "key_id"),
        totalsTable("Top models by spend, last 14 days", "Model", all.by_model.slice(0, 10), "model"));
    }
    panel.replaceChildren(h("div", { class: "card" }, parts), h("button", { type: "button", class: "secondary", on: { click: renderUsage } }, "Refresh usage"));
  } catch (error) {
    panel.replaceChildren(h("p", { class: "error", role: "alert" }, error.message));
  }
}

// ---- Keys (management) -----------------------------------------------------------------------

async function renderKeys() {
  const panel = $("panel-keys");
  let list;
  try {
    list = await call("/keys");
  } catch (error) {
    panel.replaceChildren(h("p", { class: "error", role: "alert" }, error.message));
    return;
  }
  const secret = h("div", { id: "new-key", "aria-live": "polite" });
  const scopes = ["inference", "models.read", "usage.read", "management"].filter(has);
  const form = h("form", { id: "key-create", class: "card" },
    h("h2", {}, "Create a key"),
    h("label", { for: "new-key-name" }, "Name (lowercase letters, digits, -)"),
    h("input", { id: "new-key-name", required: true, pattern: "[a-z0-9]([a-z0-9\\-]*[a-z0-9])?", maxlength: "63" }),
    h("label", { for: "new-key-description" }, "Description (optional)"),
    h("input", { id: "new-key-description", maxlength: "256" }),
    h("fieldset", {}, h("legend", {}, "Scopes"), scopes.map((scope) => h("label", { class: "check" },
      h("input", { type: "checkbox", name: "scope", value: scope, checked: scope === "inference" }), scope))),
    h("button", { type: "submit" }, "Create key"),
    h("p", { class: "error", role: "alert", id: "key-error" }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { name: $("new-key-name").value, scopes: [...form.querySelectorAll('input[name="scope"]:checked')].map((c) => c.value) };
    if ($("new-key-description").value) body.description = $("new-key-description").value;
    try {
      const created = await call("/keys", { method: "POST", body });
      showSecret(created, "created");
    } catch (error) {
      $("key-error").textContent = error.message;
    }
  });
  const rows = list.data.map((k) => h("tr", { "data-key": k.name },
    h("td", {}, h("strong", {}, k.name), k.description ? h("div", { class: "hint" }, k.description) : null),
    h("td", {}, (k.scopes || []).join(", ")),
    h("td", { class: "hide-narrow" }, k.keyPrefix ? h("code", {}, `${k.keyPrefix}…`) : "—"),
    h("td", { class: "hide-narrow" }, k.source),
    h("td", {}, h("div", { class: "row" },
      k.source === "minted" ? h("button", { type: "button", class: "secondary", "aria-label": `Rotate ${k.name}`, on: { click: () => rotate(k.name) } }, "Rotate") : null,
      h("button", { type: "button", class: "danger", "aria-label": `Revoke ${k.name}`, on: { click: () => revoke(k.name) } }, "Revoke")))));
  panel.replaceChildren(secret, form, h("div", { class: "card" }, h("h2", {}, "Keys of the project"),
    h("div", { class: "scroll" }, h("table", { class: "keys" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "Scopes"), h("th", { scope: "col", class: "hide-narrow" }, "Prefix"),
        h("th", { scope: "col", class: "hide-narrow" }, "Source"), h("th", { scope: "col" }, "Actions"))),
      h("tbody", {}, rows)))));
}

function showSecret(answer, verb) {
  renderKeys().then(() => {
    $("new-key").replaceChildren(h("div", { class: "card secret", role: "status" },
      h("p", {}, h("strong", {}, `Key ${answer.name} ${verb}. `), "Copy it now: it is shown only once and the gateway keeps only its hash."),
      h("code", { id: "new-key-secret" }, answer.key), " ", copyButton(answer.key, "Copy the new key")));
    $("new-key-secret").focus?.();
  });
}

async function rotate(name) {
  if (!confirm(`Rotate key ${name}? The old key keeps working for 24 hours.`)) return;
  try { showSecret(await call(`/keys/${encodeURIComponent(name)}/rotate`, { method: "POST", body: {} }), "rotated"); } catch (error) { alert(error.message); }
}

async function revoke(name) {
  if (!confirm(`Revoke key ${name}? Clients using it stop working at once.`)) return;
  try {
    await call(`/keys/${encodeURIComponent(name)}`, { method: "DELETE" });
    await renderKeys();
    $("new-key").replaceChildren(h("p", { role: "status", id: "key-revoked" }, `Key ${name} revoked.`));
  } catch (error) { alert(error.message); }
}

// ---- Health ----------------------------------------------------------------------------------

function lineChart(label, points, lines) {
  const width = 240, height = 60;
  const values = points.flatMap((p) => lines.map((l) => p[l] ?? 0));
  const max = Math.max(...values, 0) || 1;
  const x = (i) => (points.length < 2 ? 0 : (i / (points.length - 1)) * width);
  const y = (v) => height - 2 - (height - 4) * (v / max);
  const svg = s("svg", { class: "chart spark", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
  lines.forEach((name, k) => {
    const d = points.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p[name] ?? 0).toFixed(1)}`).join(" ");
    if (d) svg.append(s("path", { class: `line${k}`, d }));
  });
  return svg;
}

async function renderHealth() {
  const panel = $("panel-health");
  let report;
  try {
    report = await call("/health");
  } catch (error) {
    panel.replaceChildren(h("p", { class: "error", role: "alert" }, error.message));
    return;
  }
  const now = Date.now();
  for (const b of report.backends) {
    const history = healthHistory.get(b.backend) || [];
    history.push({ at: now, errors: b.window.error_rate ?? 0, ttft: b.observed.ttft_ms, predicted: b.predicted.ttft_ms });
    while (history.length && history[0].at < now - 5 * 60 * 1000) history.shift();
    healthHistory.set(b.backend, history);
  }
  const rows = report.backends.map((b) => h("tr", { "data-backend": b.backend },
    h("td", {}, h("strong", {}, b.backend), h("div", { class: "hint" }, b.serves.map((x) => `${x.endpoint}/${x.model}`).join(", "))),
    h("td", {}, h("span", { class: `badge ${b.state}`, "data-state": b.state }, b.state),
      b.ejected_until ? h("div", { class: "hint" }, `until ${new Date(b.ejected_until).toLocaleTimeString()}`) : null),
    h("td", { class: "num" }, `${pct(b.window.error_rate)} of ${num(b.window.requests)}`),
    h("td", { class: "num" }, `${ms(b.observed.ttft_ms)} / ${ms(b.predicted.ttft_ms)}`),
    h("td", { class: "num hide-narrow" }, `${ms(b.observed.tpot_ms)} / ${ms(b.predicted.tpot_ms)}`),
    h("td", { class: "num" }, `TTFT ${pct(b.slo.ttft.attainment)} · TPOT ${pct(b.slo.tpot.attainment)}`),
    h("td", { class: "hide-narrow" }, lineChart(`TTFT observed over the last minutes for ${b.backend}`, healthHistory.get(b.backend), ["ttft", "predicted"]))));
  panel.replaceChildren(h("div", { class: "card" },
    h("h2", {}, "Backend health"),
    h("p", { class: "hint" }, `As of ${new Date(report.at).toLocaleTimeString()}; error rate over the current ${report.window_seconds}-second window; TTFT and TPOT observed / predicted for a short request now; SLO attainment of requests with hints since the gateway started. Refreshes every 5 s.`),
    h("div", { class: "scroll" }, h("table", { class: "health" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Backend"), h("th", { scope: "col" }, "State"), h("th", { scope: "col", class: "num" }, "Errors"),
        h("th", { scope: "col", class: "num" }, "TTFT obs. / pred."), h("th", { scope: "col", class: "num hide-narrow" }, "TPOT obs. / pred."),
        h("th", { scope: "col", class: "num" }, "SLO met"), h("th", { scope: "col", class: "hide-narrow" }, "TTFT, last 5 min (blue observed, orange predicted)"))),
      h("tbody", {}, rows))),
    h("button", { type: "button", id: "health-refresh", class: "secondary", on: { click: renderHealth } }, "Refresh now")));
}

// ---- Playground ------------------------------------------------------------------------------

function fillPlayground() {
  const select = $("play-model");
  select.replaceChildren();
  for (const endpoint of catalog.endpoints) {
    if (!endpoint.apis.includes("chatCompletions")) continue;
    for (const m of endpoint.models.filter((m) => m.capabilities.includes("chat"))) {
      select.append(h("option", { value: `${endpoint.path}|${m.id}` }, `${m.id} (${endpoint.slug})`));
    }
  }
  $("play-send").disabled = !select.options.length || !has("inference");
  if (!has("inference")) $("play-error").textContent = "This key has no inference scope: it cannot call models.";
}

async function play(event) {
  event.preventDefault();
  const [path, model] = $("play-model").value.split("|");
  const answer = $("play-answer");
  const stats = $("play-stats");
  $("play-error").textContent = "";
  answer.textContent = "";
  stats.replaceChildren();
  const headers = { Authorization: `Bearer ${key}`, "Content-Type": "application/json" };
  if ($("play-ttft").value) headers["X-SLO-TTFT-Ms"] = $("play-ttft").value;
  if ($("play-tpot").value) headers["X-SLO-TPOT-Ms"] = $("play-tpot").value;
  const body = { model, stream: true, stream_options: { include_usage: true }, max_tokens: Number($("play-max").value) || 64,
    messages: [{ role: "user", content: $("play-prompt").value }] };
  $("play-send").disabled = true;
  const started = performance.now();
  let first = 0, chunks = 0, usage = null;
  try {
    const res = await fetch(`${path}/chat/completions`, { method: "POST", headers, body: JSON.stringify(body) });
    if (!res.ok) {
      const data = await res.json().catch(() => ({}));
      throw new Error(`${res.status}: ${(data.error && data.error.message) || res.statusText}`);
    }
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          if (chunk.usage) usage = chunk.usage;
          const text = chunk.choices && chunk.choices[0] && chunk.choices[0].delta && chunk.choices[0].delta.content;
          if (text) {
            if (!first) first = performance.now();
            chunks += 1;
            answer.textContent += text;
          }
        }
      }
    }
    const ended = performance.now();
    const tokens = usage ? usage.completion_tokens : chunks;
    const decode = (ended - (first || ended)) / 1000;
    const header = (name) => res.headers.get(name) || "—";
    const rows = [
      ["TTFT", first ? ms(first - started) : "—", "play-ttft-value"],
      ["Tokens per second", decode > 0 ? (tokens / decode).toFixed(1) : "—", "play-tps"],
      ["Output tokens", num(tokens), null],
      ["Backend", header("x-sluice-backend"), "play-backend"],
      ["Predicted TTFT", res.headers.get("x-sluice-predicted-ttft-ms") ? `${header("x-sluice-predicted-ttft-ms")} ms` : "— (not enough samples yet)", "play-predicted"],
      ["Requests left", `${header("x-ratelimit-remaining-requests")} of ${header("x-ratelimit-limit-requests")} (resets in ${header("x-ratelimit-reset-requests")})`, null],
      ["Tokens left", `${header("x-ratelimit-remaining-tokens")} of ${header("x-ratelimit-limit-tokens")} (resets in ${header("x-ratelimit-reset-tokens")})`, null],
      ["Request id", header("x-request-id"), null],
    ];
    stats.replaceChildren(...rows.flatMap(([name, value, id]) => [h("dt", {}, name), h("dd", { id }, value)]));
  } catch (error) {
    $("play-error").textContent = `The request failed: ${error.message}`;
  } finally {
    $("play-send").disabled = false;
  }
}

// ---- Start -----------------------------------------------------------------------------------

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const candidate = $("key").value.trim();
  $("signin-error").textContent = "";
  try {
    await signIn(candidate);
    $("key").value = "";
  } catch (error) {
    key = "";
    $("signin-error").textContent = error instanceof ApiError ? signInMessage(error) : `Sign-in failed: ${error.message}`;
    $("key").focus();
  }
});
$("signout").addEventListener("click", signOut);
for (const tab of document.querySelectorAll('[role="tab"]')) {
  tab.addEventListener("click", () => select(tab.id));
  tab.addEventListener("keydown", tabKeys);
}
$("play-form").addEventListener("submit", play);

const saved = sessionStorage.getItem(storageKey);
if (saved) signIn(saved).catch(() => { sessionStorage.removeItem(storageKey); key = ""; });
