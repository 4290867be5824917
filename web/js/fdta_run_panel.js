// ComfyUI-FDTA: the "FDTA" sidebar tab — the running prompt's data-set progress and the data sets already
// written under ComfyUI's output folder.
//
// Fed by the `fdta.progress` events the pack's nodes send (nodes/_server.py): `stage` (a node's
// done/total), `csim` (kept/dropped and why, CSIM histogram with fixed bins, contact sheet) and `chunk` (a
// chunk was committed). The store listens from page load, so the panel shows a run that started before it
// was opened. Data sets come from the read-only routes /fdta/datasets and /fdta/output/<file>.
import { api } from "../../../scripts/api.js";
import { bar, ensureStyles, h } from "./fdta_ui.js";

const STAGES = {
  FDTAAttributeSpec: "Plan identities",
  FDTAAttributePrompt: "LLM descriptions",
  FDTAACGSampler: "ACG: source faces",
  FDTAAlignFaces: "Align faces",
  FDTASTGMixer: "STG: styled images",
  FDTAAgeShifter: "Age shift",
  FDTACSIMFilter: "CSIM filter",
  FDTADatasetWriter: "Write chunk",
  FDTADatasetMerge: "Merge",
  FDTATrainerLauncher: "Train",
  FDTAVerify: "Verify",
};
const REASONS = { csim: "CSIM below threshold", leak: "real identity leaked", identity: "identity too few kept" };
const OK = "#3fb27f";
const BAD = "#e5534b";

function emptyRun(promptId) {
  return { promptId, status: "running", started: Date.now(), stages: new Map(), csim: null, chunks: [], error: null };
}

/** Everything the panel shows; survives the panel being closed and opened again. */
export const runStore = {
  run: null,
  hist: null, // {range, counts, chunks, images_in, kept, dropped: {...}, threshold}
  sheet: null,
  datasets: null,
  datasetsError: null,
  loading: false,
  listeners: new Set(),
  notify() {
    for (const fn of this.listeners) fn();
  },
  resetTotals() {
    this.hist = null;
    this.sheet = null;
    this.notify();
  },
};

function ensureRun(promptId) {
  if (!runStore.run || (promptId && runStore.run.promptId !== promptId)) runStore.run = emptyRun(promptId);
  return runStore.run;
}

function onProgress(d) {
  if (!d || typeof d !== "object") return;
  const run = ensureRun(d.prompt_id);
  run.status = "running";
  if (d.kind === "stage") {
    const key = String(d.node ?? d.class_type ?? "?");
    run.stages.set(key, { node: d.node, classType: d.class_type, done: d.done, total: d.total, t: Date.now() });
  } else if (d.kind === "csim") {
    run.csim = d;
    const hist = runStore.hist;
    const counts = d.histogram?.counts || [];
    if (!hist || hist.counts.length !== counts.length) {
      runStore.hist = { range: d.histogram.range, counts: counts.slice(), chunks: 1, images_in: d.images_in, kept: d.images_kept,
        dropped: { ...d.dropped }, threshold: d.threshold };
    } else {
      counts.forEach((c, i) => (hist.counts[i] += c));
      hist.chunks += 1;
      hist.images_in += d.images_in;
      hist.kept += d.images_kept;
      for (const [k, v] of Object.entries(d.dropped || {})) hist.dropped[k] = (hist.dropped[k] || 0) + v;
      hist.threshold = d.threshold;
    }
    if (d.contact_sheet) runStore.sheet = { ...d.contact_sheet, t: Date.now() };
  } else if (d.kind === "chunk") {
    run.chunks.push(d);
    refreshDatasets();
  }
  runStore.notify();
}

let installed = false;

/** Start listening to the server (once, at extension setup). */
export function installRunStore() {
  if (installed) return;
  installed = true;
  api.addEventListener("fdta.progress", (e) => onProgress(e.detail));
  api.addEventListener("execution_start", (e) => {
    runStore.run = emptyRun(e.detail?.prompt_id);
    runStore.notify();
  });
  const finish = (status) => (e) => {
    const run = runStore.run;
    if (run && (!e.detail?.prompt_id || e.detail.prompt_id === run.promptId)) {
      run.status = status;
      if (status === "error") run.error = e.detail?.exception_message || "execution failed";
      runStore.notify();
    }
  };
  api.addEventListener("execution_success", finish("done"));
  api.addEventListener("execution_error", finish("error"));
  api.addEventListener("execution_interrupted", finish("interrupted"));
  // ComfyUI sends the execution_* events only to the client that queued the prompt; a run queued by the
  // headless runner (fdta run) or another tab is seen through the broadcast queue status instead.
  api.addEventListener("status", (e) => {
    const remaining = e.detail?.exec_info?.queue_remaining;
    const run = runStore.run;
    if (remaining === 0 && run && run.status === "running") settleFromHistory(run);
  });
}

async function settleFromHistory(run) {
  let status = "done";
  try {
    const res = await api.fetchApi(`/history/${encodeURIComponent(run.promptId)}`);
    const entry = (await res.json())?.[run.promptId];
    const s = entry?.status;
    if (s?.status_str === "error") {
      status = "error";
      const msg = (s.messages || []).find((m) => m[0] === "execution_error");
      run.error = msg?.[1]?.exception_message || "execution failed";
    } else if ((s?.messages || []).some((m) => m[0] === "execution_interrupted")) status = "interrupted";
  } catch {
    // no history: the queue is empty, so the prompt is over
  }
  if (run.status === "running") {
    run.status = status;
    runStore.notify();
  }
}

export async function refreshDatasets() {
  runStore.loading = true;
  runStore.notify();
  try {
    const res = await api.fetchApi("/fdta/datasets");
    const data = await res.json();
    if (!res.ok) throw new Error(data.error || res.statusText);
    runStore.datasets = data.datasets;
    runStore.datasetsError = null;
  } catch (e) {
    runStore.datasetsError = String(e.message || e);
  } finally {
    runStore.loading = false;
    runStore.notify();
  }
}

function outputUrl(rel) {
  return api.apiURL("/fdta/output/" + rel.split("/").map(encodeURIComponent).join("/"));
}

// ------------------------------------------------------------------------------------------ rendering
function histogramSvg(hist) {
  const W = 300;
  const H = 110;
  const pad = { l: 4, r: 4, t: 6, b: 18 };
  const n = hist.counts.length;
  const [lo, hi] = hist.range;
  const max = Math.max(1, ...hist.counts);
  const bw = (W - pad.l - pad.r) / n;
  const x = (v) => pad.l + ((v - lo) / (hi - lo)) * (W - pad.l - pad.r);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("data-testid", "fdta-run-histogram");
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    svg.append(e);
    return e;
  };
  hist.counts.forEach((c, i) => {
    const left = lo + ((hi - lo) * i) / n;
    const hgt = (c / max) * (H - pad.t - pad.b);
    const rect = add("rect", { x: pad.l + i * bw + 0.5, y: H - pad.b - hgt, width: Math.max(bw - 1, 1), height: hgt, rx: 1.5,
      fill: left + (hi - lo) / n / 2 >= hist.threshold ? OK : BAD, opacity: 0.85 });
    const t = document.createElementNS(ns, "title");
    t.textContent = `${left.toFixed(2)}–${(left + (hi - lo) / n).toFixed(2)}: ${c}`;
    rect.append(t);
  });
  add("line", { x1: pad.l, x2: W - pad.r, y1: H - pad.b + 0.5, y2: H - pad.b + 0.5, stroke: "currentColor", opacity: 0.3 });
  const tx = x(hist.threshold);
  add("line", { x1: tx, x2: tx, y1: pad.t - 4, y2: H - pad.b, stroke: "currentColor", "stroke-dasharray": "3 2", opacity: 0.8 });
  add("text", { x: Math.min(tx + 3, W - 60), y: pad.t + 6, "font-size": 9, fill: "currentColor" }, `threshold ${hist.threshold.toFixed(2)}`);
  for (const v of [lo, 0, 0.5, hi]) {
    add("text", { x: x(v), y: H - 5, "font-size": 9, fill: "currentColor", opacity: 0.6,
      "text-anchor": v === lo ? "start" : v === hi ? "end" : "middle" }, v.toFixed(1));
  }
  return svg;
}

function identitiesLine(run) {
  const stages = [...run.stages.values()];
  const plan = stages.find((s) => s.classType === "FDTAAttributeSpec");
  const acg = stages.find((s) => s.classType === "FDTAACGSampler");
  let total = plan?.total ?? run.chunks.at(-1)?.classes ?? run.csim?.identities_in ?? null;
  let done = null;
  let how = "";
  if (acg && total) {
    done = Math.min(total, Math.floor((acg.done / Math.max(acg.total, 1)) * total + 1e-9));
    how = "source faces made by the ACG";
  } else if (run.chunks.length) {
    done = run.chunks.at(-1).classes;
    total = total ?? done;
    how = "written";
  } else if (plan) {
    done = plan.done;
    how = "planned";
  }
  if (total === null || done === null) return null;
  return { done, total, how };
}

function renderRun(run) {
  if (!run) {
    return h("div", { class: "fdta-card fdta-muted", testid: "fdta-run-idle" },
      "No FDTA run yet. Queue a workflow with FDTA nodes (Templates › ComfyUI-FDTA) and its progress shows up here.");
  }
  const pill = { running: "busy", done: "ok", error: "bad", interrupted: "bad" }[run.status] || "busy";
  const card = h("div", { class: "fdta-card", testid: "fdta-run-current" },
    h("div", { class: "fdta-row" }, h("b", {}, "Current prompt"), h("span", { class: "fdta-grow" }),
      h("span", { class: `fdta-pill ${pill}`, testid: "fdta-run-status" }, run.status)),
    h("div", { class: "fdta-small fdta-muted" }, run.promptId ? `prompt ${String(run.promptId).slice(0, 8)}` : ""));
  const ids = identitiesLine(run);
  if (ids) {
    card.append(h("div", { style: { marginTop: "8px" }, testid: "fdta-run-identities" },
      h("div", { class: "fdta-big" }, `${ids.done} / ${ids.total}`),
      h("div", { class: "fdta-muted fdta-small" }, `identities of the chunk · ${ids.how}`),
      bar(ids.done / Math.max(ids.total, 1))));
  }
  const stages = [...run.stages.values()];
  if (stages.length) {
    card.append(h("div", { style: { marginTop: "8px" }, testid: "fdta-run-stages" }, stages.map((s) =>
      h("div", { class: "fdta-stage" },
        h("div", { class: "fdta-row" }, h("span", {}, STAGES[s.classType] || s.classType || `node ${s.node}`),
          h("span", { class: "fdta-muted" }, `${s.done}/${s.total}`)),
        bar(s.done / Math.max(s.total, 1), s.done >= s.total ? OK : undefined)))));
  }
  if (run.error) card.append(h("div", { class: "fdta-small", style: { color: BAD, marginTop: "6px" } }, run.error));
  const c = run.csim;
  if (c) {
    const dropped = Object.entries(c.dropped || {}).filter(([, v]) => v > 0);
    card.append(h("div", { style: { marginTop: "10px" }, testid: "fdta-run-images" },
      h("div", { class: "fdta-stat" },
        h("span", {}, "images kept"), h("b", { style: { color: OK } }, `${c.images_kept} / ${c.images_in}`),
        h("span", {}, "images dropped"), h("b", { style: { color: c.images_in - c.images_kept ? BAD : undefined } }, String(c.images_in - c.images_kept)),
        dropped.map(([k, v]) => [h("span", { class: "fdta-muted fdta-small" }, ` · ${REASONS[k] || k}`), h("span", { class: "fdta-small" }, String(v))]),
        h("span", {}, "identities kept"), h("b", {}, `${c.identities_kept} / ${c.identities_in}`),
        c.csim_mean !== null && c.csim_mean !== undefined ? [h("span", {}, "CSIM mean ± sd"), h("b", {}, `${c.csim_mean.toFixed(3)} ± ${(c.csim_std ?? 0).toFixed(3)}`)] : null)));
  }
  for (const ch of run.chunks) {
    card.append(h("div", { class: "fdta-small", style: { marginTop: "6px" } },
      "✓ wrote chunk ", h("b", {}, ch.chunk), ` of ${ch.dataset}: ${ch.images} image${ch.images === 1 ? "" : "s"}, ${ch.classes} identit${ch.classes === 1 ? "y" : "ies"}`));
  }
  return card;
}

function renderTotals() {
  const out = [];
  const hist = runStore.hist;
  if (hist) {
    const dropped = hist.images_in - hist.kept;
    out.push(h("div", { class: "fdta-card", testid: "fdta-run-csim" },
      h("div", { class: "fdta-row" }, h("b", {}, "CSIM so far"), h("span", { class: "fdta-grow" }),
        h("span", { class: "fdta-muted fdta-small" }, `${hist.chunks} chunk${hist.chunks === 1 ? "" : "s"}`),
        h("button", { class: "fdta-ghost", title: "Start counting again", onclick: () => runStore.resetTotals() }, "reset")),
      histogramSvg(hist),
      h("div", { class: "fdta-legend" },
        h("span", {}, h("i", { class: "fdta-swatch", style: { background: OK, width: "9px", height: "9px", display: "inline-block" } }), `kept ${hist.kept}`),
        h("span", {}, h("i", { class: "fdta-swatch", style: { background: BAD, width: "9px", height: "9px", display: "inline-block" } }), `dropped ${dropped}`),
        Object.entries(hist.dropped).filter(([, v]) => v).map(([k, v]) => h("span", { class: "fdta-muted" }, `${REASONS[k] || k}: ${v}`)))));
  }
  if (runStore.sheet) {
    const s = runStore.sheet;
    const url = api.apiURL(`/view?filename=${encodeURIComponent(s.filename)}&subfolder=${encodeURIComponent(s.subfolder)}&type=${s.type}&t=${s.t}`);
    out.push(h("div", { class: "fdta-card", testid: "fdta-run-sheet" },
      h("b", {}, "Last contact sheet"),
      h("div", { class: "fdta-muted fdta-small", style: { marginBottom: "6px" } },
        "per identity: its reference, then each image with its CSIM; dropped ones crossed out"),
      h("a", { href: url, target: "_blank", rel: "noopener" }, h("img", { class: "fdta-sheet", src: url, alt: "contact sheet" }))));
  }
  return out;
}

function renderDatasets() {
  const head = h("div", { class: "fdta-row", style: { margin: "14px 0 6px" } }, h("b", {}, "Data sets in the output folder"),
    h("span", { class: "fdta-grow" }),
    h("button", { class: "fdta-ghost", testid: "fdta-run-refresh", onclick: () => refreshDatasets() }, runStore.loading ? "checking…" : "↻ refresh"));
  const wrap = h("div", { testid: "fdta-run-datasets" }, head);
  if (runStore.datasetsError) wrap.append(h("div", { class: "fdta-small", style: { color: BAD } }, runStore.datasetsError));
  const sets = runStore.datasets;
  if (!sets) return wrap;
  if (!sets.length) wrap.append(h("div", { class: "fdta-muted fdta-small" }, "None yet: a FDTADatasetWriter writes chunks under output/<output_name>/chunks/."));
  for (const d of sets) {
    const bad = d.kind === "merged" ? (d.status === "errors" ? 1 : 0) : d.chunks.filter((c) => c.status === "errors").length;
    const verdict = d.kind === "merged" ? (bad ? "rec info: errors" : "merged · rec info ok")
      : bad ? `${bad} chunk${bad === 1 ? "" : "s"} failing` : "rec info ok";
    const card = h("div", { class: "fdta-card", testid: "fdta-run-dataset", "data-path": d.path },
      h("div", { class: "fdta-row", style: { flexWrap: "wrap" } }, h("b", { class: "fdta-name" }, d.name), h("span", { class: "fdta-grow" }),
        h("span", { class: `fdta-pill ${bad ? "bad" : "ok"}`, title: (d.errors || []).join("\n") }, verdict)),
      h("div", { class: "fdta-small fdta-muted" }, `${d.classes} identit${d.classes === 1 ? "y" : "ies"} · ${d.images} image${d.images === 1 ? "" : "s"}` +
        (d.kind === "merged" ? " · one train.rec" : ` · ${d.chunks.length} chunk${d.chunks.length === 1 ? "" : "s"}`)),
      d.report
        ? h("div", { class: "fdta-small" }, h("a", { href: outputUrl(d.report), target: "_blank", rel: "noopener", testid: "fdta-run-report" }, "Open the quality report ↗"))
        : h("div", { class: "fdta-small fdta-muted" }, "No quality report yet; make one with ",
          h("code", { class: "fdta-cmd", title: d.report_command }, d.report_command)));
    if (d.chunks.length) {
      card.append(h("table", {},
        h("thead", {}, h("tr", {}, h("th", {}, "identities"), h("th", {}, "kept"), h("th", {}, "images"), h("th", {}, "rec info"))),
        h("tbody", {}, d.chunks.map((c) => h("tr", { testid: "fdta-run-chunk", title: [c.path, ...c.errors, ...c.warnings].join("\n") },
          h("td", {}, c.end - c.start === 1 ? `#${c.start}` : `#${c.start}–${c.end - 1}`), h("td", {}, String(c.classes)), h("td", {}, String(c.images)),
          h("td", { style: { color: c.status === "ok" ? OK : c.status === "errors" ? BAD : undefined } },
            c.status === "ok" ? "✓ ok" : c.status === "errors" ? `✕ ${c.errors[0] || "errors"}` : c.status))))));
    }
    wrap.append(card);
  }
  return wrap;
}

/** Render the panel into `el` (the sidebar tab's container); returns a function that unmounts it. */
export function mountRunPanel(el) {
  ensureStyles();
  const root = h("div", { class: "fdta-ui fdta-panel", testid: "fdta-run-panel" });
  el.replaceChildren(root);
  const draw = () => {
    const scroll = root.scrollTop;
    root.replaceChildren(
      h("h2", {}, "FDTA run", h("span", { class: "fdta-muted fdta-small", style: { fontWeight: 400 } }, "data-set progress")),
      renderRun(runStore.run),
      ...renderTotals(),
      renderDatasets());
    root.scrollTop = scroll;
  };
  let pending = false;
  const schedule = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      draw();
    });
  };
  runStore.listeners.add(schedule);
  draw();
  if (!runStore.datasets && !runStore.loading) refreshDatasets();
  return () => runStore.listeners.delete(schedule);
}
