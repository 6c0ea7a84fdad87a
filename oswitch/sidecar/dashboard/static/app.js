// oswitch dashboard: renders the snapshots the sidecar pushes over server-sent events
// (dashboard/events). No framework, no build step, nothing from another origin. All
// text from the server goes in through textContent, never as markup.
"use strict";

const TARGET_COLOURS = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948"];
const OPERATIONS = [
  ["pause", "Pause", "route no new work to it; attempts in flight finish"],
  ["resume", "Resume", "back to Active: breaker reset, cooldowns cleared, key re-read"],
  ["drain", "Drain", "no new work; attempts in flight finish, then it is Disabled"],
  ["disable", "Disable", "no new work; attempts in flight are cancelled and fail over"],
];
const SVG = "http://www.w3.org/2000/svg";

let targetOrder = [];
let lastSnapshotAt = 0;
let lastSnapshot = null;

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  return node;
}

function colourOf(targetId) {
  let index = targetOrder.indexOf(targetId);
  if (index < 0) index = targetOrder.length;
  return TARGET_COLOURS[index % TARGET_COLOURS.length];
}

function ms(value) {
  return typeof value === "number" ? `${value < 10 ? value.toFixed(1) : Math.round(value)} ms` : "–";
}

function seconds(value) {
  return typeof value === "number" && value > 0 ? `${value.toFixed(1)} s` : "–";
}

function ago(value) {
  if (typeof value !== "number") return "";
  if (value < 60) return `${Math.round(value)} s ago`;
  if (value < 3600) return `${Math.round(value / 60)} min ago`;
  return `${Math.round(value / 3600)} h ago`;
}

function badge(value) {
  return el("span", { class: `badge ${value}` }, value);
}

function setCell(cell, content) {
  cell.replaceChildren(...(Array.isArray(content) ? content : [content]));
}

// ---- usage figures (the limits work): rendered when the view carries them --------
// TargetView gains `tokens_per_minute` (tokens sent in the last minute) and
// `headroom` (what the provider reports is left) with the limits work. Until a view
// has them these cells show "–"; nothing else depends on them.
function usageFigures(t) {
  // tokens_per_minute: what the provider counted over the last minute; headroom: the
  // provider's latest reported remaining/limit per dimension, else what is left of
  // the configured token budget (docs/rate-limits.md).
  const tpm = typeof t.tokens_per_minute === "number" && (t.tokens_per_minute || hasTokenLimits(t))
    ? String(Math.round(t.tokens_per_minute)) : "–";
  const parts = [];
  const limits = t.provider_limits && typeof t.provider_limits === "object" ? t.provider_limits : {};
  for (const [dimension, short] of [["tokens", "tok"], ["input_tokens", "in"], ["output_tokens", "out"], ["requests", "req"]]) {
    const w = limits[dimension];
    if (w && typeof w === "object") {
      const count = (v) => (typeof v === "number" ? String(Math.round(v)) : "?");
      parts.push(`${short} ${count(w.remaining)}/${count(w.limit)}`);
    }
  }
  if (!parts.length && typeof t.token_budget_available === "number") {
    parts.push(`budget ${Math.max(0, Math.round(t.token_budget_available))}`);
  }
  return [tpm, parts.join(" ") || "–"];
}

function hasTokenLimits(t) {
  return typeof t.token_budget_available === "number"
    || (t.provider_limits && Object.keys(t.provider_limits).length > 0);
}

function sparkline(minutes) {
  const width = 90, height = 18;
  const peak = Math.max(1, ...minutes.map((m) => m.attempts));
  const bar = width / minutes.length;
  const svg = svgEl("svg", { width, height, class: "spark", role: "img" });
  minutes.forEach((m, i) => {
    const h = (height * m.attempts) / peak;
    const e = (height * m.errors) / peak;
    if (m.attempts) {
      svg.append(svgEl("rect", { x: i * bar, y: height - h, width: bar - 1, height: h, fill: "#9db4cf" }));
    }
    if (m.errors) {
      svg.append(svgEl("rect", { x: i * bar, y: height - e, width: bar - 1, height: e, fill: "#e15759" }));
    }
  });
  const title = svgEl("title");
  title.textContent = minutes.map((m) => `${m.attempts}/${m.errors}`).join(" ");
  svg.append(title);
  return svg;
}

function renderTargets(targets) {
  const body = document.querySelector("#targets tbody");
  const seen = new Set();
  for (const t of targets) {
    seen.add(t.target_id);
    let row = body.querySelector(`tr[data-target="${CSS.escape(t.target_id)}"]`);
    if (!row) {
      row = el("tr", { "data-target": t.target_id });
      for (let i = 0; i < 15; i++) row.append(el("td"));
      const actions = row.lastChild;
      for (const [op, label, what] of OPERATIONS) {
        const button = el("button", { type: "button", "data-op": op, title: what }, label);
        button.addEventListener("click", () => confirmOperation(t.target_id, op, label, what));
        actions.append(button);
      }
      body.append(row);
    }
    const cells = row.children;
    const stats = t.stats || { minutes: [], errors_by_class: {} };
    const requests = stats.minutes.reduce((sum, m) => sum + m.attempts, 0);
    const errors = Object.entries(stats.errors_by_class || {});
    const [tpm, headroom] = usageFigures(t);
    setCell(cells[0], el("strong", {}, t.target_id));
    setCell(cells[1], badge(t.state));
    setCell(cells[2], badge(t.condition));
    setCell(cells[3], badge(t.breaker_state));
    cells[4].textContent = typeof t.health === "number" ? t.health.toFixed(2) : "–";
    cells[5].textContent = `${t.in_flight}/${t.concurrency_limit}`;
    cells[6].textContent = seconds(t.cooldown_remaining_s);
    setCell(cells[7], [sparkline(stats.minutes), el("span", {}, ` ${requests}`)]);
    setCell(
      cells[8],
      errors.length
        ? errors.map(([k, v], i) => el("span", { class: "error-class" }, `${i ? ", " : ""}${k} ${v}`))
        : el("span", { class: "empty" }, "none"),
    );
    cells[9].textContent = ms(stats.p50_ms);
    cells[10].textContent = ms(stats.p99_ms);
    cells[11].textContent = tpm;
    cells[12].textContent = headroom;
    cells[13].textContent = t.last_error ? `${t.last_error} ${ago(t.last_error_ago_s)}` : "–";
    for (const button of cells[14].children) {
      const op = button.dataset.op;
      button.disabled = {
        pause: t.state !== "Active",
        drain: t.state !== "Active",
        resume: t.state === "Active" && t.condition === "Healthy",
        disable: t.state === "Disabled",
      }[op];
    }
    [4, 5, 6, 9, 10, 11, 12].forEach((i) => cells[i].classList.add("num"));
  }
  for (const row of [...body.children]) if (!seen.has(row.dataset.target)) row.remove();
}

function renderShare(share) {
  const box = document.getElementById("share");
  const models = Object.entries(share.models || {});
  if (!models.length) {
    box.replaceChildren(el("p", { class: "empty" }, "No traffic yet."));
    return;
  }
  const charts = models.map(([model, buckets]) => shareChart(model, buckets, share.bucket_s));
  box.replaceChildren(...charts);
}

function shareChart(model, buckets, bucketS) {
  // The bench report's traffic chart: one stacked bar per bucket, each target's share
  // of that bucket's attempts, in the target's colour; axis in minutes ago.
  const width = 760, left = 50, plotH = 90, top = 8;
  const plotW = width - left - 20;
  const wrap = el("div", { class: "chart", "data-model": model });
  wrap.append(el("h3", {}, model));
  const svg = svgEl("svg", { width, height: top + plotH + 44, role: "img", "aria-label": `traffic share of ${model}` });
  svg.append(svgEl("line", { x1: left, x2: left + plotW, y1: top + plotH, y2: top + plotH, stroke: "#999" }));
  for (const frac of [0.5, 1]) {
    const y = top + plotH * (1 - frac);
    svg.append(svgEl("line", { x1: left, x2: left + plotW, y1: y, y2: y, stroke: "#e6e6e6" }));
    const label = svgEl("text", { x: left - 6, y: y + 4, "font-size": 10, "text-anchor": "end" });
    label.textContent = `${frac * 100}%`;
    svg.append(label);
  }
  const slot = plotW / buckets.length;
  const used = new Set();
  buckets.forEach((counts, i) => {
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    let y = top + plotH;
    for (const target of targetOrder.concat(Object.keys(counts).filter((k) => !targetOrder.includes(k)))) {
      const n = counts[target] || 0;
      if (!n || !total) continue;
      used.add(target);
      const h = (plotH * n) / total;
      y -= h;
      const rect = svgEl("rect", { x: left + i * slot, y, width: Math.max(1, slot - 1), height: h, fill: colourOf(target) });
      const title = svgEl("title");
      const minutesAgo = ((buckets.length - 1 - i) * bucketS) / 60;
      title.textContent = `${target}: ${n}/${total} attempts, ${minutesAgo.toFixed(1)} min ago`;
      rect.append(title);
      svg.append(rect);
    }
  });
  const span = (buckets.length * bucketS) / 60;
  for (let m = 0; m <= span; m += 2) {
    const x = left + plotW - (plotW * m) / span;
    svg.append(svgEl("line", { x1: x, x2: x, y1: top + plotH, y2: top + plotH + 4, stroke: "#999" }));
    const tick = svgEl("text", { x, y: top + plotH + 15, "font-size": 10, "text-anchor": "middle" });
    tick.textContent = m ? `-${m} min` : "now";
    svg.append(tick);
  }
  let x = left;
  for (const target of [...used]) {
    svg.append(svgEl("rect", { x, y: top + plotH + 26, width: 10, height: 10, fill: colourOf(target) }));
    const label = svgEl("text", { x: x + 14, y: top + plotH + 35, "font-size": 11 });
    label.textContent = target;
    svg.append(label);
    x += 28 + 7 * target.length;
  }
  wrap.append(svg);
  return wrap;
}

function renderRecent(recent) {
  const body = document.querySelector("#recent tbody");
  const rows = recent.map((e) => {
    const row = el("tr", { "data-event": e.event });
    row.append(el("td", {}, ago(e.ago_s)));
    const what = { attempt: "attempt failed", target_state: `state → ${e.state || ""}` }[e.event];
    row.append(el("td", {}, what || e.event.replace("_", " ")));
    row.append(el("td", {}, e.target_id || ""));
    row.append(el("td", {}, e.model || ""));
    row.append(el("td", { class: e.error_class ? "error-class" : "" }, e.error_class || ""));
    row.append(el("td", {}, e.decision || e.note || ""));
    const cell = el("td");
    if (e.request_id) {
      const link = el("a", { class: "request", href: "#", "data-request": e.request_id }, e.request_id);
      link.addEventListener("click", (event) => {
        event.preventDefault();
        showTrace(e.request_id);
      });
      cell.append(link);
    }
    row.append(cell);
    return row;
  });
  if (!rows.length) {
    const row = el("tr");
    row.append(el("td", { colspan: 7, class: "empty" }, "Nothing yet: no failover, error or breaker change."));
    rows.push(row);
  }
  body.replaceChildren(...rows);
}

function render(snapshot) {
  lastSnapshot = snapshot;
  lastSnapshotAt = Date.now();
  targetOrder = snapshot.targets.map((t) => t.target_id);
  renderTargets(snapshot.targets);
  renderShare(snapshot.share);
  renderRecent(snapshot.recent);
}

// ---- a request's trace: the inspect-request timeline ---------------------------

async function showTrace(requestId) {
  const panel = document.getElementById("trace-panel");
  panel.hidden = false;
  document.getElementById("trace-id").textContent = requestId;
  const summary = document.getElementById("trace-summary");
  const timeline = document.getElementById("trace-timeline");
  summary.textContent = "loading…";
  timeline.replaceChildren();
  const response = await fetch(`dashboard/api/requests/${encodeURIComponent(requestId)}`, {
    credentials: "same-origin",
  });
  if (!response.ok) {
    summary.textContent = response.status === 404 ? "This trace is no longer kept." : `error ${response.status}`;
    return;
  }
  const trace = await response.json();
  const start = trace.started_at || 0;
  const total = trace.duration_s || Math.max(...trace.attempts.map((a) => a.started_at + a.duration_s - start), 0.001);
  const parts = [`model ${trace.model}`, `outcome ${trace.outcome}`];
  if (trace.served_by) parts.push(`served by ${trace.served_by} (${trace.served_model})`);
  if (trace.error_class) parts.push(`class ${trace.error_class}`);
  if (typeof trace.duration_s === "number") parts.push(`total ${trace.duration_s.toFixed(3)} s`);
  parts.push(`queued ${(trace.queue_wait_s || 0).toFixed(3)} s`);
  summary.textContent = parts.join(" · ");
  const table = el("table");
  const head = el("tr");
  for (const h of ["at", "target", "model", "took", "class", "decision", "", "detail"]) head.append(el("th", {}, h));
  table.append(head);
  for (const a of trace.attempts) {
    const row = el("tr", { "data-attempt": a.index });
    row.append(el("td", { class: "num" }, `+${(a.started_at - start).toFixed(3)} s`));
    row.append(el("td", {}, a.target_id));
    row.append(el("td", {}, a.model));
    row.append(el("td", { class: "num" }, `${a.duration_s.toFixed(3)} s`));
    row.append(el("td", { class: a.error_class ? "error-class" : "" }, a.error_class || "ok"));
    row.append(el("td", {}, a.decision));
    const bar = svgEl("svg", { width: 160, height: 10 });
    bar.append(svgEl("rect", {
      x: (160 * (a.started_at - start)) / total,
      y: 1,
      width: Math.max(2, (160 * a.duration_s) / total),
      height: 8,
      fill: a.error_class ? "#e15759" : colourOf(a.target_id),
    }));
    const barCell = el("td");
    barCell.append(bar);
    row.append(barCell);
    const details = [];
    if (a.status !== null && a.status !== undefined) details.push(`status ${a.status}`);
    if (a.retry_after !== null && a.retry_after !== undefined) details.push(`retry after ${a.retry_after} s`);
    if (a.hedge) details.push("hedge");
    if (a.note) details.push(a.note);
    row.append(el("td", {}, details.join("; ")));
    table.append(row);
  }
  if (!trace.attempts.length) table.append(el("tr", {}, "(no attempts)"));
  timeline.replaceChildren(table);
}

// ---- operations, each confirmed first ---------------------------------------------

function confirmOperation(targetId, op, label, what) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = `${label} ${targetId}? This will ${what}.`;
  dialog.dataset.target = targetId;
  dialog.dataset.op = op;
  dialog.returnValue = "";
  dialog.showModal();
}

async function runOperation(targetId, op) {
  const status = document.getElementById("action-status");
  status.textContent = `${op} ${targetId}…`;
  const response = await fetch(
    `dashboard/api/targets/${encodeURIComponent(targetId)}/${op}`,
    { method: "POST", credentials: "same-origin", headers: { "content-type": "application/json" }, body: "{}" },
  );
  if (response.ok) {
    status.textContent = `${op} ${targetId}: done`;
  } else {
    const body = await response.json().catch(() => ({}));
    status.textContent = `${op} ${targetId}: refused (${response.status}${body.error ? ": " + body.error : ""})`;
  }
}

// ---- live updates ----------------------------------------------------------------

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource("dashboard/events");
  source.addEventListener("snapshot", (event) => {
    live.textContent = "live";
    live.className = "live on";
    render(JSON.parse(event.data));
  });
  source.addEventListener("error", () => {
    live.className = "live off";
    live.textContent = source.readyState === EventSource.CLOSED ? "disconnected: reload to sign in" : "reconnecting…";
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const dialog = document.getElementById("confirm");
  dialog.addEventListener("close", () => {
    if (dialog.returnValue === "ok") runOperation(dialog.dataset.target, dialog.dataset.op);
  });
  document.getElementById("trace-close").addEventListener("click", () => {
    document.getElementById("trace-panel").hidden = true;
  });
  // Between pushes the ages and cooldowns count on by themselves.
  setInterval(() => {
    if (!lastSnapshot) return;
    const passed = (Date.now() - lastSnapshotAt) / 1000;
    document.querySelectorAll("#targets tbody tr").forEach((row) => {
      const t = lastSnapshot.targets.find((x) => x.target_id === row.dataset.target);
      if (t && typeof t.cooldown_remaining_s === "number") {
        row.children[6].textContent = seconds(t.cooldown_remaining_s - passed);
      }
    });
  }, 1000);
  connect();
});
