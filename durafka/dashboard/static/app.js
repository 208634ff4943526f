// durafka dashboard: a small single-page app over the HTTP API of `durafka serve`.
// No build step: plain ES module, rendered with template strings (every value escaped).

const STATUSES = ["PENDING", "RUNNING", "SUSPENDED", "COMPLETED", "FAILED", "TERMINATED",
  "CONTINUED_AS_NEW"];
const main = document.getElementById("main");
let streamAbort = null; // the live stream of the current page

// -- plumbing ------------------------------------------------------------------------------

const esc = (v) => String(v ?? "").replace(/[&<>"']/g,
  (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const enc = encodeURIComponent;
const json = (v) => JSON.stringify(v, null, 2);
const token = () => sessionStorage.getItem("durafka-token");

function headers(extra = {}) {
  const t = token();
  return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
}

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function api(path, { method = "GET", body } = {}) {
  const init = { method, headers: headers() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 401) { showLogin(); throw new ApiError(401, "a token is required"); }
  const data = res.headers.get("content-type")?.includes("json") ? await res.json() : null;
  if (!res.ok) {
    const detail = typeof data?.detail === "string" ? data.detail : json(data?.detail ?? res.statusText);
    throw new ApiError(res.status, detail);
  }
  return data;
}

// Server-sent events over fetch (EventSource cannot send the Authorization header).
async function stream(path, onEvent) {
  if (streamAbort) streamAbort.abort();
  const abort = new AbortController();
  streamAbort = abort;
  const live = document.getElementById("live");
  while (!abort.signal.aborted) {
    try {
      const res = await fetch(path, { headers: headers(), signal: abort.signal });
      if (!res.ok) throw new ApiError(res.status, res.statusText);
      live.classList.add("on");
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const chunk = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let name = "message", data = "";
          for (const line of chunk.split("\n")) {
            if (line.startsWith("event: ")) name = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          if (data) onEvent(name, JSON.parse(data));
        }
      }
    } catch (err) {
      if (abort.signal.aborted) return;
    }
    live.classList.remove("on");
    await new Promise((r) => setTimeout(r, 2000)); // reconnect
  }
}

function stopStream() {
  if (streamAbort) streamAbort.abort();
  streamAbort = null;
  document.getElementById("live").classList.remove("on");
}

const badge = (s) => `<span class="badge s-${esc(s)}">${esc(s)}</span>`;
const time = (iso) => iso ? esc(iso.replace("T", " ").replace("+00:00", "Z")) : "";
const ms = (n) => n == null ? "" : n < 1000 ? `${n} ms` : n < 60000 ? `${(n / 1000).toFixed(2)} s`
  : `${(n / 60000).toFixed(1)} min`;

function showError(where, err) {
  where.innerHTML = `<p class="error" data-testid="error">${esc(err.message)}</p>`;
}

// A dialog with a form; resolves with the form's values, or null when cancelled.
function ask(title, bodyHtml, { ok = "OK", danger = false, check } = {}) {
  const dialog = document.getElementById("dialog");
  document.getElementById("dialog-title").textContent = title;
  document.getElementById("dialog-body").innerHTML = bodyHtml;
  const error = document.getElementById("dialog-error");
  error.textContent = "";
  const okButton = document.getElementById("dialog-ok");
  okButton.textContent = ok;
  okButton.className = danger ? "danger" : "primary";
  return new Promise((resolve) => {
    const form = document.getElementById("dialog-form");
    const cancel = document.getElementById("dialog-cancel");
    const done = (value) => {
      form.onsubmit = null; cancel.onclick = null; dialog.close(); resolve(value);
    };
    form.onsubmit = (ev) => {
      ev.preventDefault();
      const values = Object.fromEntries(new FormData(form).entries());
      const problem = check ? check(values) : null;
      if (problem) { error.textContent = problem; return; }
      done(values);
    };
    cancel.onclick = () => done(null);
    dialog.showModal();
  });
}

function parseJson(text) {
  if (text === undefined || text.trim() === "") return { value: null };
  try { return { value: JSON.parse(text) }; } catch (err) { return { error: `not JSON: ${err.message}` }; }
}

// -- login ---------------------------------------------------------------------------------

function showLogin() {
  stopStream();
  main.innerHTML = `
    <div class="panel login">
      <h2>Sign in</h2>
      <p class="muted">Paste the API token (DURAFKA_API_TOKEN, or DURAFKA_API_READ_TOKEN to look
      without acting). It is kept for this tab only.</p>
      <form id="login"><input type="password" name="token" placeholder="token" autofocus>
      <button class="primary">Sign in</button></form>
    </div>`;
  document.getElementById("login").onsubmit = (ev) => {
    ev.preventDefault();
    sessionStorage.setItem("durafka-token", new FormData(ev.target).get("token"));
    route();
  };
}

// -- instances -----------------------------------------------------------------------------

const list = { statuses: new Set(), name: "", prefix: "", from: "", to: "", tokens: [null], page: 0 };
let orchestrations = {};

async function instancesPage() {
  main.innerHTML = `
    <h2>Instances</h2>
    <div class="chips" id="chips"></div>
    <div class="filters">
      <label>Orchestration<select id="f-name"><option value="">all</option></select></label>
      <label>Id prefix<input id="f-prefix" placeholder="order-" value="${esc(list.prefix)}"></label>
      <label>Created from<input id="f-from" type="datetime-local" value="${esc(list.from)}"></label>
      <label>Created before<input id="f-to" type="datetime-local" value="${esc(list.to)}"></label>
      <button id="f-apply" class="primary">Filter</button>
      <button id="f-clear">Clear</button>
      <button id="start">Start an instance</button>
    </div>
    <div id="rows"></div>`;
  const names = document.getElementById("f-name");
  for (const n of Object.keys(orchestrations)) {
    names.insertAdjacentHTML("beforeend",
      `<option ${n === list.name ? "selected" : ""}>${esc(n)}</option>`);
  }
  const apply = () => {
    list.name = names.value;
    list.prefix = document.getElementById("f-prefix").value.trim();
    list.from = document.getElementById("f-from").value;
    list.to = document.getElementById("f-to").value;
    list.tokens = [null]; list.page = 0;
    loadRows();
  };
  document.getElementById("f-apply").onclick = apply;
  document.getElementById("f-prefix").onkeydown = (ev) => { if (ev.key === "Enter") apply(); };
  names.onchange = apply;
  document.getElementById("f-clear").onclick = () => {
    Object.assign(list, { statuses: new Set(), name: "", prefix: "", from: "", to: "",
      tokens: [null], page: 0 });
    instancesPage();
  };
  document.getElementById("start").onclick = startDialog;
  renderChips(null);
  await loadRows();
  let pending = null;
  stream("/api/stream", (name, data) => {
    if (name !== "counts") return;
    renderChips(data);
    // Refresh the first page as instances change; deeper pages stay put while read.
    if (list.page === 0 && !pending) pending = setTimeout(() => { pending = null; loadRows(); }, 1000);
  });
}

function renderChips(counts) {
  const chips = document.getElementById("chips");
  if (!chips) return;
  const n = (s) => counts ? counts.counts[s] ?? 0 : "…";
  chips.innerHTML = `<span class="chip ${list.statuses.size ? "" : "on"}" data-status="">All
      <b data-testid="count-ALL">${counts ? counts.total : "…"}</b></span>` +
    STATUSES.map((s) => `<span class="chip ${list.statuses.has(s) ? "on" : ""}" data-status="${s}">
      ${s.toLowerCase().replaceAll("_", " ")} <b data-testid="count-${s}">${n(s)}</b></span>`).join("");
  for (const chip of chips.querySelectorAll(".chip")) {
    chip.onclick = () => {
      const s = chip.dataset.status;
      if (!s) list.statuses.clear();
      else if (list.statuses.has(s)) list.statuses.delete(s);
      else list.statuses.add(s);
      list.tokens = [null]; list.page = 0;
      renderChips(counts); loadRows();
    };
  }
}

function localToIso(value) {
  return value ? new Date(value).toISOString() : null;
}

async function loadRows() {
  const rows = document.getElementById("rows");
  if (!rows) return;
  const q = new URLSearchParams({ page_size: "50", newest_first: "true" });
  for (const s of list.statuses) q.append("status", s);
  if (list.name) q.set("name", list.name);
  if (list.prefix) q.set("id_prefix", list.prefix);
  if (list.from) q.set("created_from", localToIso(list.from));
  if (list.to) q.set("created_to", localToIso(list.to));
  const tokenOfPage = list.tokens[list.page];
  if (tokenOfPage) q.set("continuation", tokenOfPage);
  let page;
  try { page = await api(`/api/instances?${q}`); } catch (err) { return showError(rows, err); }
  list.tokens[list.page + 1] = page.continuation;
  rows.innerHTML = `
    <table data-testid="instances">
      <thead><tr><th>Instance</th><th>Orchestration</th><th>Status</th><th>Created</th>
      <th>Updated</th></tr></thead>
      <tbody>${page.items.map((i) => `
        <tr data-instance="${esc(i.instance_id)}">
          <td class="mono"><a href="#/instance/${enc(i.instance_id)}">${esc(i.instance_id)}</a></td>
          <td>${esc(i.name)}</td><td>${badge(i.status)}</td>
          <td>${time(i.created_at)}</td><td>${time(i.last_updated_at)}</td>
        </tr>`).join("") || `<tr><td colspan="5" class="muted">No instances match.</td></tr>`}
      </tbody>
    </table>
    <div class="pager">
      <button id="prev" ${list.page === 0 ? "disabled" : ""}>&larr; Newer</button>
      <span class="muted">page ${list.page + 1}</span>
      <button id="next" ${page.continuation ? "" : "disabled"}>Older &rarr;</button>
    </div>`;
  document.getElementById("prev").onclick = () => { list.page -= 1; loadRows(); };
  document.getElementById("next").onclick = () => { list.page += 1; loadRows(); };
}

async function startDialog() {
  const names = Object.keys(orchestrations);
  const values = await ask("Start an instance", `
    <label>Orchestration</label>
    <select name="name">${names.map((n) => `<option>${esc(n)}</option>`).join("")}</select>
    <label>Instance id (empty: a random one)</label><input name="instance_id">
    <label>Input (JSON)</label><textarea name="input">null</textarea>`,
  { ok: "Start", check: (v) => parseJson(v.input).error });
  if (!values) return;
  try {
    const started = await api("/api/instances", { method: "POST", body: {
      name: values.name, input: parseJson(values.input).value,
      instance_id: values.instance_id || null } });
    location.hash = `#/instance/${enc(started.instance_id)}`;
  } catch (err) { alert(err.message); }
}

// -- one instance --------------------------------------------------------------------------

async function instancePage(id) {
  main.innerHTML = `<p class="muted">Loading ${esc(id)}&hellip;</p>`;
  let shown = null; // the status on the page
  const render = async () => {
    let view;
    try { view = await api(`/api/instances/${enc(id)}/page`); } catch (err) { return showError(main, err); }
    const i = view.instance;
    shown = i.status;
    const active = ["PENDING", "RUNNING", "SUSPENDED"].includes(i.status);
    main.innerHTML = `
      <p><a href="#/">&larr; Instances</a></p>
      <h2 class="mono" data-testid="instance-id">${esc(i.instance_id)}</h2>
      <div class="actions">
        ${active ? `<button id="a-raise" class="primary">Raise event</button>` : ""}
        ${i.status === "RUNNING" || i.status === "PENDING" ? `<button id="a-suspend">Suspend</button>` : ""}
        ${i.status === "SUSPENDED" ? `<button id="a-resume">Resume</button>` : ""}
        ${active ? `<button id="a-terminate" class="danger">Terminate</button>` : ""}
        ${!active ? `<button id="a-restart">Restart</button>` : ""}
        ${!active ? `<button id="a-purge" class="danger">Purge</button>` : ""}
      </div>
      <div class="cols">
        <div class="panel"><dl class="grid">
          <dt>Status</dt><dd data-testid="status">${badge(i.status)}</dd>
          <dt>Orchestration</dt><dd>${esc(i.name)}</dd>
          <dt>Created</dt><dd>${time(i.created_at)}</dd>
          <dt>Last updated</dt><dd>${time(i.last_updated_at)}</dd>
          <dt>Execution</dt><dd class="mono">${esc(i.execution_id ?? "")}</dd>
          <dt>Parent</dt><dd>${i.parent_instance_id
            ? `<a class="mono" href="#/instance/${enc(i.parent_instance_id)}">${esc(i.parent_instance_id)}</a>` : "—"}</dd>
          <dt>Children</dt><dd>${view.children.map((c) =>
            `<a class="mono" href="#/instance/${enc(c)}">${esc(c)}</a>`).join("<br>") || "—"}</dd>
        </dl></div>
        <div class="panel">
          <h3>Input</h3><pre data-testid="input">${esc(json(i.input))}</pre>
          <h3>Output</h3><pre data-testid="output">${esc(json(i.output))}</pre>
          ${i.custom_status != null ? `<h3>Custom status</h3><pre>${esc(json(i.custom_status))}</pre>` : ""}
        </div>
      </div>
      ${i.failure ? `<div class="panel"><h3>Failure: ${esc(i.failure.error_type)}</h3>
        <p class="error">${esc(i.failure.message)}</p>
        <pre data-testid="traceback">${esc(i.failure.stack_trace ?? "")}</pre></div>` : ""}
      <div class="panel"><h3>Timeline</h3>${timeline(view.timeline, i)}</div>
      <div class="panel"><h3>History (${view.history.length} events)</h3>
        <table><thead><tr><th>Time</th><th>Event</th><th>Seq</th><th>Name</th><th>Detail</th></tr></thead>
        <tbody>${view.history.map((e) => `<tr><td>${time(e.timestamp)}</td><td>${esc(e.kind)}</td>
          <td>${e.seq >= 0 ? e.seq : ""}</td><td>${esc(e.name ?? e.instance_id ?? "")}</td>
          <td class="mono">${esc(e.failure ? `${e.failure.error_type}: ${e.failure.message}`
            : e.payload != null ? JSON.stringify(e.payload).slice(0, 160) : "")}</td></tr>`).join("")}
        </tbody></table></div>`;
    bind("a-raise", () => raiseDialog(id));
    bind("a-terminate", () => act(id, "terminate", "Terminate", true));
    bind("a-suspend", () => act(id, "suspend", "Suspend", false));
    bind("a-resume", () => act(id, "resume", "Resume", false));
    bind("a-restart", () => confirmThen(`Restart ${id}?`, "A new execution with the same input.",
      "Restart", () => api(`/api/instances/${enc(id)}/restart`, { method: "POST" })));
    bind("a-purge", () => confirmThen(`Purge ${id}?`, "Its history, state and status are deleted.",
      "Purge", () => api(`/api/instances/${enc(id)}`, { method: "DELETE" }), true,
      () => { location.hash = "#/"; }));
  };
  await render();
  // A page view scans the instance's changelog partition for its history: re-read it when
  // the status changes, else at most every 3 s while the instance keeps changing.
  let last = Date.now(), trailing = null, first = true;
  stream(`/api/stream?instance_id=${enc(id)}`, (name, data) => {
    const status = data.status ?? name;
    if (first) { first = false; if (status === shown) return; } // the state on connecting
    clearTimeout(trailing);
    if (status !== shown || Date.now() - last > 3000) {
      last = Date.now(); render();
    } else {
      trailing = setTimeout(() => { last = Date.now(); render(); }, 3000);
    }
  });
}

function bind(id, fn) { const el = document.getElementById(id); if (el) el.onclick = fn; }

async function confirmThen(title, text, ok, call, danger = false, after = null) {
  const values = await ask(title, `<p>${esc(text)}</p>`, { ok, danger });
  if (!values) return;
  try { await call(); if (after) after(); } catch (err) { alert(err.message); }
}

async function act(id, action, label, danger) {
  const values = await ask(`${label} ${id}?`,
    `<label>Reason (optional)</label><input name="reason">`, { ok: label, danger });
  if (!values) return;
  try {
    await api(`/api/instances/${enc(id)}/${action}`, { method: "POST",
      body: { reason: values.reason || null } });
  } catch (err) { alert(err.message); }
}

async function raiseDialog(id) {
  const values = await ask(`Raise an event on ${id}`, `
    <label>Event name</label><input name="event" required>
    <label>Data (JSON)</label><textarea name="data">null</textarea>`,
  { ok: "Raise event", check: (v) => !v.event ? "the event needs a name" : parseJson(v.data).error });
  if (!values) return;
  try {
    await api(`/api/instances/${enc(id)}/events/${enc(values.event)}`, { method: "POST",
      body: parseJson(values.data).value });
  } catch (err) { alert(err.message); }
}

function timeline(spans, instance) {
  // On the scale of the whole execution: from its creation to its end (or now).
  const finished = ["COMPLETED", "FAILED", "TERMINATED"].includes(instance.status);
  const now = Date.now();
  const execution = { kind: "execution", name: instance.name, start_ms: instance.created_at_ms,
    end_ms: finished ? instance.last_updated_at_ms : null,
    outcome: !finished ? "pending" : instance.status === "COMPLETED" ? "completed" : "failed" };
  execution.duration_ms = execution.end_ms == null ? null : execution.end_ms - execution.start_ms;
  const all = [execution, ...spans];
  const start = Math.min(...all.map((s) => s.start_ms));
  const end = Math.max(...all.map((s) => s.end_ms ?? now), start + 1);
  const pct = (t) => ((t - start) / (end - start)) * 100;
  return `<div class="timeline" data-testid="timeline">${all.map((s) => `
    <div class="row"><span>${esc(s.kind.replace("_", " "))}: <b>${esc(s.name ?? s.target ?? "")}</b>
      ${s.target && s.kind === "sub_orchestration"
        ? `<a class="mono" href="#/instance/${enc(s.target)}">${esc(s.target)}</a>` : ""}</span>
      <div class="track"><div class="bar ${esc(s.outcome)}" style="left:${pct(s.start_ms)}%;
        width:${Math.max(pct(s.end_ms ?? now) - pct(s.start_ms), 0.4)}%"></div></div>
      <span class="muted">${s.outcome === "pending" ? "pending" : ms(s.duration_ms)}</span></div>`).join("")}
    </div>${spans.length ? "" : `<p class="muted">Nothing awaited yet.</p>`}`;
}

// -- entities ------------------------------------------------------------------------------

async function entitiesPage(tokens = [null], page = 0, name = "") {
  stopStream();
  main.innerHTML = `<h2>Entities</h2>
    <div class="filters"><label>Name<input id="e-name" value="${esc(name)}"></label>
    <button id="e-apply" class="primary">Filter</button></div><div id="rows"></div>`;
  document.getElementById("e-apply").onclick = () =>
    entitiesPage([null], 0, document.getElementById("e-name").value.trim());
  const q = new URLSearchParams({ page_size: "50" });
  if (name) q.set("name", name);
  if (tokens[page]) q.set("continuation", tokens[page]);
  const rows = document.getElementById("rows");
  let result;
  try { result = await api(`/api/entities?${q}`); } catch (err) { return showError(rows, err); }
  tokens[page + 1] = result.continuation;
  rows.innerHTML = `<table><thead><tr><th>Entity</th><th>State</th><th>Modified</th><th>Locked by</th>
    </tr></thead><tbody>${result.items.map((e) => `<tr>
      <td class="mono"><a href="#/entity/${enc(e.name)}/${enc(e.key)}">${esc(e.entity_id)}</a></td>
      <td class="mono">${esc(JSON.stringify(e.state).slice(0, 120))}</td>
      <td>${time(e.last_modified_at)}</td><td class="mono">${esc(e.locked_by ?? "")}</td></tr>`).join("")
      || `<tr><td colspan="4" class="muted">No entities.</td></tr>`}</tbody></table>
    <div class="pager"><button id="prev" ${page ? "" : "disabled"}>&larr; Previous</button>
    <button id="next" ${result.continuation ? "" : "disabled"}>Next &rarr;</button></div>`;
  document.getElementById("prev").onclick = () => entitiesPage(tokens, page - 1, name);
  document.getElementById("next").onclick = () => entitiesPage(tokens, page + 1, name);
}

async function entityPage(name, key) {
  stopStream();
  let e;
  try { e = await api(`/api/entities/${enc(name)}/${enc(key)}`); } catch (err) { return showError(main, err); }
  main.innerHTML = `<p><a href="#/entities">&larr; Entities</a></p>
    <h2 class="mono">${esc(e.entity_id)}</h2>
    <div class="actions"><button id="signal" class="primary">Signal</button>
    <button id="delete" class="danger">Delete</button><button id="reload">Reload</button></div>
    <div class="panel"><dl class="grid"><dt>Modified</dt><dd>${time(e.last_modified_at)}</dd>
      <dt>Locked by</dt><dd class="mono">${esc(e.locked_by ?? "—")}</dd>
      <dt>Queued</dt><dd>${e.queued}</dd><dt>Errors</dt><dd>${e.error_count}</dd></dl>
      <h3>State</h3><pre data-testid="entity-state">${esc(json(e.state))}</pre>
      ${e.last_error ? `<h3>Last error</h3><pre>${esc(e.last_error.error_type)}: ${esc(e.last_error.message)}</pre>` : ""}
    </div>`;
  bind("reload", () => entityPage(name, key));
  bind("signal", async () => {
    const v = await ask(`Signal ${e.entity_id}`, `<label>Operation</label><input name="operation" required>
      <label>Input (JSON)</label><textarea name="input">null</textarea>`,
    { ok: "Signal", check: (x) => !x.operation ? "the operation needs a name" : parseJson(x.input).error });
    if (!v) return;
    try {
      await api(`/api/entities/${enc(name)}/${enc(key)}/signals/${enc(v.operation)}`,
        { method: "POST", body: parseJson(v.input).value });
    } catch (err) { alert(err.message); }
  });
  bind("delete", () => confirmThen(`Delete ${e.entity_id}?`, "Its state is deleted.", "Delete",
    () => api(`/api/entities/${enc(name)}/${enc(key)}`, { method: "DELETE" }), true,
    () => { location.hash = "#/entities"; }));
}

// -- dead letters --------------------------------------------------------------------------

async function deadLettersPage(tokens = [null], page = 0) {
  stopStream();
  main.innerHTML = `<h2>Dead letters</h2><div id="rows"><p class="muted">Loading&hellip;</p></div>`;
  const q = new URLSearchParams({ limit: "50" });
  if (tokens[page]) q.set("continuation", tokens[page]);
  const rows = document.getElementById("rows");
  let result;
  try { result = await api(`/api/dead-letters?${q}`); } catch (err) { return showError(rows, err); }
  tokens[page + 1] = result.continuation;
  rows.innerHTML = `<table><thead><tr><th>Id</th><th>Failed at</th><th>Source</th><th>Key</th>
    <th>Reason</th></tr></thead><tbody>${result.items.map((d) => `<tr>
      <td class="mono"><a href="#/dead-letter/${enc(d.id)}">${esc(d.id)}</a></td>
      <td>${time(d.failed_at)}</td><td class="mono">${esc(d.source_topic)}[${d.source_partition}]@${d.source_offset}</td>
      <td class="mono">${esc(d.key ?? "")}</td><td>${esc(d.reason.slice(0, 160))}</td></tr>`).join("")
      || `<tr><td colspan="5" class="muted">No dead letters.</td></tr>`}</tbody></table>
    <div class="pager"><button id="prev" ${page ? "" : "disabled"}>&larr; Newer</button>
    <button id="next" ${result.continuation ? "" : "disabled"}>Older &rarr;</button></div>`;
  document.getElementById("prev").onclick = () => deadLettersPage(tokens, page - 1);
  document.getElementById("next").onclick = () => deadLettersPage(tokens, page + 1);
}

async function deadLetterPage(id) {
  stopStream();
  let d;
  try { d = await api(`/api/dead-letters/${enc(id)}`); } catch (err) { return showError(main, err); }
  main.innerHTML = `<p><a href="#/dead-letters">&larr; Dead letters</a></p>
    <h2 class="mono">dead letter ${esc(d.id)}</h2><div class="panel"><pre>${esc(json(d))}</pre></div>`;
}

// -- cluster -------------------------------------------------------------------------------

async function clusterPage() {
  stopStream();
  main.innerHTML = `<h2>Cluster</h2><div id="c-body"><p class="muted">Loading&hellip;</p></div>`;
  const body = document.getElementById("c-body");
  const draw = async () => {
    if (!document.getElementById("c-body")) return false;
    let info, points, topo;
    try {
      [info, points, topo] = await Promise.all([api("/api/partitions"), api("/api/throughput"),
        api("/api/topology")]);
    } catch (err) { showError(body, err); return true; }
    body.innerHTML = `
      <div class="panel"><h3>Throughput (records/s, last ${Math.round(points.length * 5 / 60)} min)</h3>
        ${chart(points)}</div>
      <div class="panel"><h3>Partitions</h3>
        <p class="muted">${info.processors.length} processor(s), ${info.workers.length} worker(s);
        sampled ${time(info.sampled_at)}</p>
        <table data-testid="partitions"><thead><tr><th>Topic</th><th>Partition</th><th>Owner</th>
        <th>Committed</th><th>End</th><th>Lag</th><th>State</th></tr></thead><tbody>
        ${info.partitions.map((p) => `<tr><td>${esc(p.topic)}</td><td>${p.partition}</td>
          <td class="mono">${esc(p.owner ?? "—")}</td><td>${p.committed ?? "—"}</td><td>${p.end}</td>
          <td>${p.lag}</td><td>${esc(p.state)}</td></tr>`).join("")}</tbody></table></div>
      <div class="panel"><h3>Topics ${topo.in_sync ? "(in sync with the spec)" : "(differ from the spec)"}</h3>
        <table><thead><tr><th>Topic</th><th>Partitions</th><th>Replication</th><th>Differences</th></tr></thead>
        <tbody>${topo.topics.map((t) => `<tr><td class="mono">${esc(t.name)}</td>
          <td>${t.exists ? t.partitions : "missing"}</td><td>${t.replication_factor ?? ""}</td>
          <td class="error">${esc(t.differences.join("; "))}</td></tr>`).join("")}</tbody></table></div>`;
    return true;
  };
  await draw();
  const timer = setInterval(async () => { if (!(await draw())) clearInterval(timer); }, 5000);
}

function chart(points) {
  if (points.length < 2) return `<p class="muted">Collecting samples (one every 5 s)&hellip;</p>`;
  const series = [["orchestrations_in", "#2f6fde", "written to orchestrations"],
    ["orchestrations_done", "#1e8a4c", "processed by processors"],
    ["activities_done", "#b7791f", "activities completed"]];
  const w = 1000, h = 200, pad = 30;
  const t0 = points[0].at_ms, t1 = points[points.length - 1].at_ms;
  const max = Math.max(1, ...points.flatMap((p) => series.map(([k]) => p[k])));
  const x = (t) => pad + ((t - t0) / Math.max(1, t1 - t0)) * (w - 2 * pad);
  const y = (v) => h - pad + 10 - (v / max) * (h - pad - 10);
  const lines = series.map(([k, color]) => `<polyline fill="none" stroke="${color}" stroke-width="2"
    points="${points.map((p) => `${x(p.at_ms).toFixed(1)},${y(p[k]).toFixed(1)}`).join(" ")}"/>`).join("");
  return `<svg class="chart" viewBox="0 0 ${w} ${h + 10}" preserveAspectRatio="none">
    <line x1="${pad}" y1="${y(0)}" x2="${w - pad}" y2="${y(0)}" stroke="#ccc"/>
    <text x="${pad}" y="14" font-size="12" fill="#6b7380">${max.toFixed(1)}/s</text>${lines}</svg>
    <div class="legend">${series.map(([, c, label]) => `<span><i style="background:${c}"></i>${label}</span>`).join("")}</div>`;
}

// -- routing -------------------------------------------------------------------------------

async function route() {
  const hash = location.hash || "#/";
  const [, section = "", ...rest] = hash.slice(1).split("/");
  for (const a of document.querySelectorAll("nav a")) {
    const nav = a.dataset.nav;
    a.classList.toggle("active", nav === (section || "instances") || (nav === "instances" && section === "instance")
      || (nav === "entities" && section === "entity") || (nav === "dead-letters" && section === "dead-letter"));
  }
  try {
    const who = await api("/api/whoami");
    orchestrations = who.orchestrations;
    document.getElementById("hub").textContent =
      `${who.task_hub} @ ${who.bootstrap}${who.role === "read" ? " (read-only)" : ""}`;
  } catch (err) {
    if (err.status !== 401) showError(main, err);
    return;
  }
  const arg = rest.map(decodeURIComponent);
  if (section === "instance") return instancePage(arg.join("/"));
  if (section === "entities") return entitiesPage();
  if (section === "entity") return entityPage(arg[0], arg.slice(1).join("/"));
  if (section === "dead-letters") return deadLettersPage();
  if (section === "dead-letter") return deadLetterPage(arg.join("/"));
  if (section === "cluster") return clusterPage();
  return instancesPage();
}

window.addEventListener("hashchange", route);
route();
