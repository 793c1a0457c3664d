// Stock page: asks for an API key (kept in sessionStorage), looks SKUs up through the JSON API
// and renders ATP per location and per location group. Vanilla JS, no dependencies.
"use strict";

(function () {
  const KEY_ITEM = "atp.apiKey";
  const MAX_SKUS = 100;
  const BATCH_MAX = 1000; // items per POST /v1/availability
  const PARALLEL = 6; // concurrent lookups (a browser's connections per host)
  const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;
  const API = "../v1/"; // relative: works behind a path-prefix proxy too
  const LABELS = {
    in_stock: "in stock", low_stock: "low", out_of_stock: "out", unknown: "unknown",
  };

  const $ = (id) => document.getElementById(id);
  let busy = false;

  class ApiError extends Error {
    constructor(status, problem, requestId) {
      const title = (problem && problem.title) || "HTTP " + status;
      const detail = (problem && problem.detail) || "";
      super(detail ? title + ": " + detail : title);
      this.status = status;
      this.problem = problem;
      this.requestId = requestId;
    }
  }

  function getKey() { return sessionStorage.getItem(KEY_ITEM) || ""; }

  function showKeyForm(show) {
    $("key-form").hidden = !show;
    $("key-state").hidden = show || !getKey();
    if (show) $("key").focus();
  }

  async function api(path, options) {
    const headers = { Authorization: "Bearer " + getKey(), Accept: "application/json" };
    if (options && options.body) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(API + path, Object.assign({ headers: headers, cache: "no-store" }, options));
    } catch (err) {
      throw new ApiError(0, { title: "Cannot reach the service", detail: "check your network or VPN" }, null);
    }
    let body = null;
    try { body = await response.json(); } catch (err) { body = null; }
    if (!response.ok) throw new ApiError(response.status, body, response.headers.get("X-Request-ID"));
    return body;
  }

  // Runs task(item) for every item, at most `limit` at once; results in input order.
  async function pool(items, limit, task) {
    const out = new Array(items.length);
    let next = 0;
    async function worker() {
      while (next < items.length) {
        const i = next++;
        try { out[i] = await task(items[i]); } catch (err) { out[i] = err; }
      }
    }
    const workers = [];
    for (let i = 0; i < Math.min(limit, items.length); i++) workers.push(worker());
    await Promise.all(workers);
    return out;
  }

  function parseSkus(text) {
    const seen = new Set();
    const out = [];
    for (const part of text.split(/[\s,;]+/)) {
      if (part && !seen.has(part)) { seen.add(part); out.push(part); }
    }
    return out;
  }

  function statusOf(atp, low) {
    if (atp <= 0) return "out_of_stock";
    return atp <= low ? "low_stock" : "in_stock";
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function badge(status) {
    const span = el("span", "badge st-" + status, LABELS[status] || status);
    span.title = status.replace(/_/g, " ");
    return span;
  }

  function showMessage(text, requestId, warn) {
    const box = $("message");
    box.textContent = text;
    box.className = warn ? "message warn" : "message";
    if (requestId) box.appendChild(el("span", "rid", " (request id " + requestId + ")"));
    box.hidden = false;
  }

  function explain(err) {
    if (!(err instanceof ApiError)) return String(err);
    const hints = {
      401: "The key was not accepted. Paste a valid API key.",
      403: "This key may not read availability (it needs the availability:read scope).",
      429: "The service is busy; try again in a moment.",
      503: "The service is starting up or cannot reach its data; try again in a moment.",
    };
    const head = (err.status ? err.status + " " : "") + err.message;
    const sentence = /[.!?]$/.test(head) ? head : head + ".";
    return sentence + (hints[err.status] ? " " + hints[err.status] : "");
  }

  function renderService(status) {
    const box = $("service");
    box.textContent = "";
    box.appendChild(el("span", status.status, "Service " + status.status));
    const bits = [];
    if (status.replicas_seen !== null) bits.push(status.replicas_seen + " replica(s)");
    bits.push("ERP " + status.erp.mode + (status.erp.mode === "erp" ? ", breaker " + status.erp.breaker : ""));
    if (status.feed) bits.push("feed lag " + status.feed.lag);
    box.appendChild(document.createTextNode(" · " + bits.join(" · ")));
    if (status.reasons && status.reasons.length) box.title = status.reasons.join("\n");
  }

  function renderFreshness(status, anyStale) {
    const box = $("freshness");
    const age = status.cache.age_seconds;
    const ageText = age === null ? "unknown" : age < 1 ? age.toFixed(2) + " s" : age.toFixed(1) + " s";
    const stale = anyStale || !status.cache.fresh;
    box.textContent = (stale ? "Possibly out of date: " : "Live data: ") +
      "last update read " + ageText + " ago" +
      (anyStale ? "; rows marked stale may lag the ERP" : "") +
      (status.reasons && status.reasons.length ? " (" + status.reasons.join("; ") + ")" : "");
    box.className = stale ? "freshness stale" : "freshness";
    box.hidden = false;
  }

  function row(kind, sku, name, cells, status) {
    const tr = el("tr", kind + " st-" + status);
    tr.dataset.kind = kind;
    tr.dataset.sku = sku;
    tr.dataset.name = name;
    tr.dataset.status = status;
    for (const [cls, value] of cells) {
      if (value instanceof Node) tr.appendChild(value.tagName === "TD" ? value : cell(cls, value));
      else tr.appendChild(el("td", cls, value));
    }
    return tr;
  }

  function cell(cls, child) {
    const td = el("td", cls);
    td.appendChild(child);
    return td;
  }

  function renderSku(sku, detail, groupItems, status) {
    const body = el("tbody");
    body.dataset.sku = sku;
    const head = el("tr", "sku");
    head.dataset.kind = "sku";
    head.dataset.sku = sku;
    const name = el("th", null, sku);
    name.scope = "rowgroup";
    head.appendChild(name);
    if (detail instanceof Error) {
      const unknown = detail instanceof ApiError && detail.status === 404;
      const st = "unknown";
      head.className = "sku st-" + st;
      head.dataset.status = st;
      head.appendChild(el("th", "num atp", "0"));
      const s = el("th"); s.appendChild(badge(st)); head.appendChild(s);
      const note = el("th", "note", unknown ? "unknown SKU" : explain(detail));
      note.colSpan = 5;
      head.appendChild(note);
      body.appendChild(head);
      return body;
    }
    const total = statusOf(detail.total_atp, status.low_stock);
    head.className = "sku st-" + total;
    head.dataset.status = total;
    head.appendChild(el("th", "num atp", detail.total_atp));
    const s = el("th"); s.appendChild(badge(total));
    if (detail.stale) s.appendChild(el("span", "badge stale", "stale"));
    head.appendChild(s);
    const note = el("th", "note", detail.locations.length + " location(s)");
    note.colSpan = 5;
    head.appendChild(note);
    body.appendChild(head);
    for (const loc of detail.locations) {
      body.appendChild(row("location", sku, loc.location, [
        ["name", loc.location], ["num atp", loc.atp], ["status", badge(loc.status)],
        ["num", loc.on_hand], ["num", loc.allocated], ["num", loc.safety_stock],
        ["num", loc.pending], ["num", loc.seq],
      ], loc.status));
    }
    for (const item of groupItems) {
      const label = el("td", "name");
      label.appendChild(document.createTextNode(item.group + " "));
      label.appendChild(el("span", "members", "(" + (status.groups[item.group] || []).join(", ") + ")"));
      body.appendChild(row("group", sku, item.group, [
        ["name", label], ["num atp", item.atp], ["status", badge(item.status)],
        ["num", ""], ["num", ""], ["num", ""], ["num", ""], ["num", ""],
      ], item.status));
    }
    return body;
  }

  function renderInvalid(sku) {
    const body = el("tbody");
    body.dataset.sku = sku;
    const head = el("tr", "sku st-unknown");
    head.dataset.kind = "sku";
    head.dataset.sku = sku;
    head.dataset.status = "unknown";
    head.appendChild(el("th", null, sku));
    head.appendChild(el("th", "num atp", "0"));
    const s = el("th"); s.appendChild(badge("unknown")); head.appendChild(s);
    const note = el("th", "note", "not a valid SKU (letters, digits and . _ : - only, at most 64)");
    note.colSpan = 5;
    head.appendChild(note);
    body.appendChild(head);
    return body;
  }

  async function groupTotals(skus, groups) {
    const items = [];
    for (const sku of skus) for (const g of groups) items.push({ sku: sku, group: g });
    const out = [];
    for (let i = 0; i < items.length; i += BATCH_MAX) {
      const chunk = items.slice(i, i + BATCH_MAX);
      const answer = await api("availability", { method: "POST", body: JSON.stringify({ items: chunk }) });
      out.push(...answer.items);
      if (answer.stale) out.stale = true;
    }
    return out;
  }

  async function check(event) {
    if (event) event.preventDefault();
    if (busy) return;
    $("message").hidden = true;
    if (!getKey()) { showMessage("Enter your API key first."); showKeyForm(true); return; }
    const all = parseSkus($("skus").value);
    if (!all.length) { showMessage("Type or paste at least one SKU.", null, true); return; }
    if (all.length > MAX_SKUS) {
      showMessage("At most " + MAX_SKUS + " SKUs at once (you entered " + all.length + ").", null, true);
      return;
    }
    const valid = all.filter((s) => ID_RE.test(s));
    busy = true;
    $("check").disabled = true;
    $("check").textContent = "Checking…";
    try {
      const statusP = api("status");
      const detailsP = pool(valid, PARALLEL, (sku) => api("availability/" + encodeURIComponent(sku)));
      const status = await statusP;
      renderService(status);
      const groups = Object.keys(status.groups);
      const [details, totals] = await Promise.all([
        detailsP, groups.length && valid.length ? groupTotals(valid, groups) : Promise.resolve([]),
      ]);
      const bySku = new Map();
      for (const item of totals) {
        if (!bySku.has(item.sku)) bySku.set(item.sku, []);
        bySku.get(item.sku).push(item);
      }
      const failed = details.find((d) => d instanceof ApiError && d.status !== 404);
      if (failed && (failed.status === 401 || failed.status === 403)) throw failed;
      const table = $("results");
      for (const old of Array.from(table.tBodies)) old.remove();
      const frag = document.createDocumentFragment();
      let anyStale = Boolean(totals.stale);
      const detailOf = new Map(valid.map((sku, i) => [sku, details[i]]));
      for (const sku of all) {
        if (!detailOf.has(sku)) { frag.appendChild(renderInvalid(sku)); continue; }
        const detail = detailOf.get(sku);
        if (!(detail instanceof Error) && detail.stale) anyStale = true;
        frag.appendChild(renderSku(sku, detail, bySku.get(sku) || [], status));
      }
      table.appendChild(frag);
      table.hidden = false;
      renderFreshness(status, anyStale);
      if (failed) showMessage("Some SKUs could not be read: " + explain(failed), failed.requestId, true);
      $("sku-count").textContent = all.length + " SKU(s), checked " + new Date().toLocaleTimeString();
    } catch (err) {
      showMessage(explain(err), err.requestId);
      if (err.status === 401) showKeyForm(true);
    } finally {
      busy = false;
      $("check").disabled = false;
      $("check").textContent = "Check stock";
    }
  }

  function init() {
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("key").value.trim();
      if (!key) { $("key").focus(); return; }
      sessionStorage.setItem(KEY_ITEM, key);
      $("key").value = "";
      $("message").hidden = true;
      showKeyForm(false);
      $("skus").focus();
      if ($("skus").value.trim()) check();
    });
    $("forget-key").addEventListener("click", () => {
      sessionStorage.removeItem(KEY_ITEM);
      showKeyForm(true);
    });
    $("lookup").addEventListener("submit", check);
    $("skus").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) check(event);
    });
    $("skus").addEventListener("input", () => {
      const n = parseSkus($("skus").value).length;
      $("sku-count").textContent = n ? n + " SKU(s)" + (n > MAX_SKUS ? " — too many" : "") : "";
    });
    const preset = new URLSearchParams(location.search).get("skus");
    if (preset) $("skus").value = preset;
    showKeyForm(!getKey());
    if (getKey() && preset) check();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
