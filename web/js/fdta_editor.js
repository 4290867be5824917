// ComfyUI-FDTA: the attribute editor of FDTAAttributeSpec (a modal dialog).
//
// The node's `spec` widget (JSON text) stays the source of truth: the editor parses it, edits a copy, and
// "Apply" writes the copy back as formatted JSON (the text a saved workflow then holds). Opening and applying
// without a change leaves the text byte for byte as it was. Every edit is checked by the pack's route
// /fdta/spec/preview, which runs the same parser and planner as the node, so the messages (with the
// entry that is wrong) and the sample identities are exactly what a run would give.
import { api } from "../../../scripts/api.js";
import { BY_CHOICES, FIELDS, TOTAL, ageBins, caseKeys, clone, equalShares, formatSpec, percent, roundToTotal,
  rowsToValues, setShare, valuesToRows } from "./fdta_spec_model.js";
import { debounce, ensureStyles, h } from "./fdta_ui.js";

const NODE_TYPE = "FDTAAttributeSpec";
const PALETTE = ["#4f9cf5", "#e58b4b", "#3fb27f", "#c160d6", "#d9c33f", "#e5534b", "#4bc6c9", "#9a8cf0",
  "#8fbf4f", "#d66f9b", "#6f8fa8", "#b0875a"];
const LABELS = { face_shape: "face shape" };
let defaultSpecText = null;
let openDialog = null;

/** The shipped default spec text (the node's widget default), used when a field is switched on again. */
export function setDefaultSpecText(text) {
  if (typeof text === "string") defaultSpecText = text;
}

function defaultSpec() {
  try {
    return defaultSpecText ? JSON.parse(defaultSpecText) : null;
  } catch {
    return null;
  }
}

function widgetOf(node, name) {
  return node?.widgets?.find((w) => w.name === name);
}

/** The selected FDTAAttributeSpec node, else the first one in the graph, else null. */
export function findSpecNode(app) {
  const selected = Object.values(app.canvas?.selected_nodes || {});
  const pick = selected.find((n) => n.type === NODE_TYPE || n.comfyClass === NODE_TYPE);
  if (pick) return pick;
  const nodes = app.graph?._nodes || app.graph?.nodes || [];
  return nodes.find((n) => n.type === NODE_TYPE || n.comfyClass === NODE_TYPE) || null;
}

function toast(app, severity, summary, detail) {
  try {
    app.extensionManager.toast.add({ severity, summary, detail, life: 5000 });
  } catch {
    console.warn(`[FDTA] ${summary}: ${detail}`);
  }
}

export function openAttributeEditor(app, node) {
  node = node || findSpecNode(app);
  if (!node) {
    toast(app, "warn", "FDTA attribute editor", "Add an FDTA Attribute Spec node first (FDTA › attributes).");
    return null;
  }
  const widget = widgetOf(node, "spec");
  if (!widget) {
    toast(app, "error", "FDTA attribute editor", "This node has no 'spec' widget (converted to an input?).");
    return null;
  }
  ensureStyles();
  openDialog?.close();
  const editor = new AttributeEditor(app, node, widget);
  openDialog = editor.dialog;
  return editor;
}

class AttributeEditor {
  constructor(app, node, widget) {
    this.app = app;
    this.node = node;
    this.widget = widget;
    this.originalText = String(widget.value ?? "");
    this.stash = {}; // configuration of fields switched off in this session
    this.tabs = {}; // field -> selected case tab
    this.error = null;
    this.lastPreview = null;
    this.previewSeq = 0;
    try {
      this.spec = JSON.parse(this.originalText);
      if (!this.spec || typeof this.spec !== "object" || Array.isArray(this.spec)) throw new Error("not a JSON object");
      this.parseError = null;
    } catch (e) {
      this.spec = null;
      this.parseError = String(e.message || e);
    }
    this.initial = null; // set after the first render (which may normalise shorthand entries)
    this.preview = { seed: Number(widgetOf(node, "seed")?.value ?? 0), start: Number(widgetOf(node, "identity_start")?.value ?? 0), count: 6 };
    this.schedule = debounce(() => this.check(), 250);
    this.build();
  }

  // ------------------------------------------------------------------------------------- layout
  build() {
    this.left = h("section", { testid: "fdta-editor-fields" });
    this.right = h("section", { testid: "fdta-editor-side" });
    this.status = h("span", { class: "fdta-pill busy", testid: "fdta-editor-status" }, "checking…");
    this.applyBtn = h("button", { class: "fdta-primary", testid: "fdta-editor-apply", onclick: () => this.apply() }, "Apply to node");
    const title = this.node.title || "FDTA Attribute Spec";
    this.root = h(
      "div",
      { class: "fdta-ui fdta-editor", testid: "fdta-attribute-editor" },
      h("header", {},
        h("h2", {}, "Attribute editor"),
        h("span", { class: "fdta-muted" }, `${title} #${this.node.id}`),
        h("span", { class: "fdta-grow" }),
        this.status,
        h("button", { class: "fdta-ghost", title: "Close without applying", onclick: () => this.close() }, "✕")),
      h("main", {}, this.left, this.right),
      h("footer", {},
        h("span", { class: "fdta-muted fdta-small" },
          "The node's JSON stays the source of truth: Apply writes this population into it; the workflow saves that text."),
        h("span", { class: "fdta-grow" }),
        h("button", { testid: "fdta-editor-cancel", onclick: () => this.close() }, "Cancel"),
        this.applyBtn),
    );
    this.dialog = h("dialog", { class: "fdta-dialog fdta-ui", testid: "fdta-attribute-editor-dialog" }, this.root);
    this.dialog.addEventListener("close", () => {
      this.dialog.remove();
      if (openDialog === this.dialog) openDialog = null;
    });
    // keep ComfyUI's canvas shortcuts (Delete, Ctrl+A, ...) away from the editor's inputs
    for (const type of ["keydown", "keyup", "keypress"]) {
      this.dialog.addEventListener(type, (e) => {
        if (e.key !== "Escape") e.stopPropagation();
      });
    }
    document.body.append(this.dialog);
    this.dialog.showModal();
    this.render();
    if (this.spec) {
      this.initial = formatSpec(this.ordered());
      this.check();
    }
  }

  render() {
    const scroll = this.left.scrollTop;
    this.left.replaceChildren(...this.renderFields());
    this.left.scrollTop = scroll;
    this.renderSide();
  }

  renderFields() {
    if (!this.spec) {
      const area = h("textarea", { rows: 18, value: this.originalText, testid: "fdta-editor-raw" });
      return [
        h("div", { class: "fdta-msg bad" }, h("b", {}, "The spec is not valid JSON: "), this.parseError,
          h("div", { class: "fdta-small" }, "Fix the text below, or start from the shipped default.")),
        area,
        h("div", { class: "fdta-row", style: { marginTop: "8px" } },
          h("button", { onclick: () => this.reload(area.value) }, "Use this text"),
          h("button", { onclick: () => defaultSpecText && this.reload(defaultSpecText) }, "Start from the default spec")),
      ];
    }
    const fields = this.fields();
    const out = [h("div", { class: "fdta-section-title" }, "Prompt")];
    out.push(this.renderPrompt());
    out.push(h("div", { class: "fdta-section-title" }, "Population: one row per attribute"));
    for (const name of FIELDS) {
      if (name === "age") out.push(this.renderAge(fields.age));
      else out.push(this.renderField(name, fields[name]));
    }
    return out;
  }

  fields() {
    if (!this.spec.fields || typeof this.spec.fields !== "object" || Array.isArray(this.spec.fields)) this.spec.fields = {};
    return this.spec.fields;
  }

  // ------------------------------------------------------------------------------------- prompt
  renderPrompt() {
    if (!this.spec.prompt || typeof this.spec.prompt !== "object") this.spec.prompt = {};
    const p = this.spec.prompt;
    const suffix = Array.isArray(p.suffix) ? p.suffix.join(", ") : String(p.suffix ?? "");
    const set = (key, value) => {
      p[key] = value;
      this.changed(false);
    };
    return h("div", { class: "fdta-card", testid: "fdta-field-prompt", "data-field": "prompt" },
      h("div", { class: "fdta-kv" },
        h("label", {}, "Prefix"),
        h("input", { type: "text", value: String(p.prefix ?? ""), testid: "fdta-prompt-prefix",
          placeholder: "photo portrait of", oninput: (e) => set("prefix", e.target.value) }),
        h("label", {}, "Suffix"),
        h("input", { type: "text", value: suffix, testid: "fdta-prompt-suffix", placeholder: "plain background, sharp focus",
          title: "Comma-separated phrases appended to every prompt",
          oninput: (e) => set("suffix", e.target.value.split(",").map((s) => s.trim()).filter(Boolean)) }),
        h("label", {}, "Negative"),
        h("textarea", { rows: 2, value: String(p.negative ?? ""), testid: "fdta-prompt-negative",
          oninput: (e) => set("negative", e.target.value) })));
  }

  // ------------------------------------------------------------------------------------- age
  renderAge(age) {
    const on = !!age && typeof age === "object";
    const head = h("div", { class: "fdta-field-head" },
      h("label", {}, h("input", { type: "checkbox", checked: on, testid: "fdta-toggle-age", onchange: (e) => this.toggle("age", e.target.checked) }),
        h("h3", {}, "age")),
      on ? h("span", { class: "fdta-muted fdta-small" }, "balanced over bins; the exact age inside a bin comes from the run seed") : h("span", { class: "fdta-muted fdta-small" }, "left out of the description"));
    const card = h("div", { class: "fdta-card" + (on ? "" : " fdta-off"), testid: "fdta-field-age", "data-field": "age" }, head);
    if (!on) return card;
    const explicit = !!age.bins;
    const mode = h("select", { testid: "fdta-age-mode", onchange: (e) => this.setAgeMode(e.target.value) },
      h("option", { value: "uniform" }, "uniform over years"), h("option", { value: "bins" }, "explicit bins"));
    mode.value = explicit ? "bins" : "uniform";
    const body = h("div", { class: "fdta-field-body" });
    if (!explicit) {
      const num = (key, dflt, testid) => h("input", { type: "number", min: 0, max: 120, step: 1, value: age[key] ?? dflt, testid, style: { width: "72px" },
        onchange: (e) => { age[key] = Math.round(Number(e.target.value)); this.changed(true); } });
      body.append(h("div", { class: "fdta-row" },
        h("span", {}, "Distribution"), mode,
        h("span", {}, "from"), num("min", 18, "fdta-age-min"), h("span", {}, "to"), num("max", 80, "fdta-age-max"),
        h("span", {}, "bin width"), num("bin_width", 10, "fdta-age-bin-width")));
      const bins = ageBins(age);
      const widths = bins.map((b) => b.hi - b.lo + 1);
      const total = widths.reduce((a, b) => a + b, 0) || 1;
      body.append(h("div", { style: { marginTop: "6px" } }, bins.map((b, i) =>
        h("span", { class: "fdta-chip" }, `${b.label} · ${percent(Math.round((widths[i] / total) * TOTAL))}%`))));
    } else {
      body.append(h("div", { class: "fdta-row" }, h("span", {}, "Distribution"), mode));
      const rows = valuesToRows(age.bins);
      body.append(this.renderShares("age", null, rows, false, (r) => {
        const out = {};
        for (const row of r) out[row.value] = Number((row.tenths / TOTAL).toFixed(4));
        age.bins = out;
      }, "18-29"));
    }
    card.append(body);
    return card;
  }

  setAgeMode(mode) {
    const age = this.fields().age;
    if (mode === "bins" && !age.bins) {
      const bins = ageBins(age);
      const widths = bins.map((b) => b.hi - b.lo + 1);
      const total = widths.reduce((a, b) => a + b, 0) || 1;
      const tenths = roundToTotal(widths.map((w) => (w / total) * TOTAL), TOTAL);
      const out = {};
      bins.forEach((b, i) => (out[b.label] = tenths[i] / TOTAL));
      for (const k of ["min", "max", "distribution", "bin_width"]) delete age[k];
      age.bins = out;
    } else if (mode === "uniform" && age.bins) {
      const bins = ageBins(age);
      delete age.bins;
      Object.assign(age, { min: bins[0]?.lo ?? 18, max: bins[bins.length - 1]?.hi ?? 80, distribution: "uniform", bin_width: 10 });
    }
    this.changed(true);
  }

  // ------------------------------------------------------------------------------------- fields
  renderField(name, raw) {
    const on = raw !== undefined && raw !== null;
    const label = LABELS[name] || name;
    const card = h("div", { class: "fdta-card" + (on ? "" : " fdta-off"), testid: `fdta-field-${name}`, "data-field": name });
    const head = h("div", { class: "fdta-field-head" },
      h("label", {}, h("input", { type: "checkbox", checked: on, testid: `fdta-toggle-${name}`, onchange: (e) => this.toggle(name, e.target.checked) }),
        h("h3", {}, label)));
    card.append(head);
    if (!on) {
      head.append(h("span", { class: "fdta-muted fdta-small" }, "left out of the description"));
      return card;
    }
    if (Array.isArray(raw)) {
      raw = { values: raw };
      this.fields()[name] = raw;
    }
    if (typeof raw !== "object") {
      head.append(h("span", { class: "fdta-muted" }, "not an object; fix it in the JSON"));
      return card;
    }
    const conditional = name !== "gender" && name !== "race";
    const template = h("input", { type: "text", value: raw.template ?? "{value}", testid: `fdta-template-${name}`, style: { width: "150px" },
      title: "How a value enters the prompt; {value} stands for the value",
      oninput: (e) => { raw.template = e.target.value; this.changed(false); } });
    head.append(h("span", { class: "fdta-grow" }), h("span", { class: "fdta-muted fdta-small" }, "phrase"), template);
    if (conditional) {
      const by = h("select", { testid: `fdta-by-${name}`, onchange: (e) => this.setBy(name, e.target.value) },
        h("option", { value: "" }, "same for all"),
        BY_CHOICES.map((b) => h("option", { value: b }, `by ${b}`)));
      by.value = raw.by || "";
      head.append(by);
    }
    const body = h("div", { class: "fdta-field-body" });
    if (raw.by) body.append(this.renderCases(name, raw));
    else body.append(this.renderShares(name, null, valuesToRows(raw.values), Array.isArray(raw.values), (rows, asList) => {
      raw.values = rowsToValues(rows, asList);
    }));
    card.append(body);
    return card;
  }

  renderCases(name, raw) {
    const keys = caseKeys(this.spec, raw.by);
    if (!raw.cases || typeof raw.cases !== "object") raw.cases = {};
    const tabs = ["*", ...keys];
    let current = this.tabs[name];
    if (!tabs.includes(current)) current = keys.find((k) => raw.cases[k]) ?? "*";
    this.tabs[name] = current;
    const bar = h("div", { class: "fdta-tabs", role: "tablist" }, tabs.map((k) =>
      h("button", { class: "fdta-tab", role: "tab", "aria-selected": String(k === current), testid: `fdta-tab-${name}-${k}`,
        onclick: () => { this.tabs[name] = k; this.render(); } },
        k === "*" ? "all others" : k, k !== "*" && !raw.cases[k] ? " ·" : "")));
    const wrap = h("div", {}, bar);
    if (current === "*") {
      if (raw.values === undefined) {
        wrap.append(h("div", { class: "fdta-row fdta-muted" }, "Every case has its own list. ",
          h("button", { onclick: () => { raw.values = rowsToValues(valuesToRows(raw.cases[keys[0]] || ["value"]), true); this.changed(true); } }, "Add a list for unlisted cases")));
      } else {
        wrap.append(h("div", { class: "fdta-muted fdta-small" }, `Used for every ${raw.by} without its own list.`));
        wrap.append(this.renderShares(name, null, valuesToRows(raw.values), Array.isArray(raw.values), (rows, asList) => { raw.values = rowsToValues(rows, asList); }));
      }
    } else if (!raw.cases[current]) {
      wrap.append(h("div", { class: "fdta-row fdta-muted" }, `${raw.by} ${current} uses the “all others” list. `,
        h("button", { testid: `fdta-own-${name}-${current}`, onclick: () => { raw.cases[current] = clone(raw.values ?? ["value"]); this.changed(true); } }, `Give ${current} its own list`)));
    } else {
      wrap.append(this.renderShares(name, current, valuesToRows(raw.cases[current]), Array.isArray(raw.cases[current]),
        (rows, asList) => { raw.cases[current] = rowsToValues(rows, asList); },
        undefined,
        () => { delete raw.cases[current]; if (raw.values === undefined) raw.values = rowsToValues(valuesToRows(Object.values(raw.cases)[0] || ["value"]), true); this.changed(true); }));
    }
    return wrap;
  }

  setBy(name, by) {
    const raw = this.fields()[name];
    if (!by) {
      const first = raw.values ?? Object.values(raw.cases || {})[0] ?? ["value"];
      delete raw.by;
      delete raw.cases;
      raw.values = first;
    } else {
      const base = raw.values ?? Object.values(raw.cases || {})[0] ?? ["value"];
      raw.by = by;
      raw.cases = {};
      for (const k of caseKeys(this.spec, by)) raw.cases[k] = clone(base);
      delete raw.values;
      this.tabs[name] = undefined;
    }
    this.changed(true);
  }

  toggle(name, on) {
    const fields = this.fields();
    if (!on) {
      if (fields[name] !== undefined && fields[name] !== null) this.stash[name] = fields[name];
      delete fields[name];
    } else {
      const dflt = defaultSpec()?.fields?.[name];
      fields[name] = this.stash[name] ?? (dflt !== undefined ? clone(dflt) : name === "age" ? { min: 18, max: 80, distribution: "uniform", bin_width: 10 } : { values: ["value"] });
    }
    this.changed(true);
  }

  /**
   * One row per value: name, slider and percentage (always summing to 100 %), remove; plus "add" and
   * "equal shares". `write(rows, asList)` stores the rows into the spec.
   */
  renderShares(field, kase, rows, asList, write, placeholder, removeList) {
    const key = kase ? `${field}-${kase}` : field;
    const commit = (structural) => {
      write(rows, asList);
      this.changed(structural);
    };
    const sum = () => rows.reduce((a, r) => a + r.tenths, 0);
    const sumEl = h("span", { class: "fdta-sum fdta-small fdta-muted", testid: `fdta-sum-${key}` });
    const stack = h("div", { class: "fdta-stack" });
    const inputs = [];
    const refresh = () => {
      inputs.forEach(({ slider, num }, i) => {
        slider.value = String(rows[i].tenths);
        if (document.activeElement !== num) num.value = percent(rows[i].tenths);
      });
      sumEl.textContent = `${rows.length} value${rows.length === 1 ? "" : "s"} · total ${percent(sum())}%`;
      stack.replaceChildren(...rows.map((r, i) => h("span", { title: `${r.value} ${percent(r.tenths)}%`,
        style: { width: `${r.tenths / 10}%`, background: PALETTE[i % PALETTE.length] } })));
    };
    const list = h("div", { testid: `fdta-shares-${key}` });
    rows.forEach((row, i) => {
      const slider = h("input", { type: "range", min: 1, max: TOTAL, step: 1, value: row.tenths, "aria-label": `${row.value} share`,
        testid: `fdta-slider-${key}-${row.value}` });
      const num = h("input", { type: "number", min: 0.1, max: 100, step: 0.1, value: percent(row.tenths), "aria-label": `${row.value} %`,
        testid: `fdta-share-${key}-${row.value}` });
      slider.addEventListener("input", () => { setShare(rows, i, Number(slider.value)); asList = false; refresh(); commit(false); });
      num.addEventListener("change", () => { setShare(rows, i, Math.round(Number(num.value) * 10)); asList = false; refresh(); num.value = percent(rows[i].tenths); commit(false); });
      const name = h("input", { type: "text", value: row.value, testid: `fdta-value-${key}-${i}`, "aria-label": "value",
        onchange: (e) => { row.value = e.target.value.trim() || row.value; commit(true); } });
      const remove = h("button", { class: "fdta-ghost", title: "Remove this value", disabled: rows.length <= 1,
        onclick: () => { const t = rows[i].tenths; rows.splice(i, 1); if (rows.length) { rows[0].tenths += t; setShare(rows, 0, rows[0].tenths); } commit(true); } }, "✕");
      inputs.push({ slider, num });
      list.append(h("div", { class: "fdta-share-row", "data-value": row.value, "data-index": String(i) },
        name, slider, num, h("span", { class: "fdta-muted" }, "%"), remove));
    });
    const add = h("input", { type: "text", placeholder: placeholder || "add a value…", testid: `fdta-add-${key}`, style: { width: "180px" } });
    const addValue = () => {
      const v = add.value.trim();
      if (!v || rows.some((r) => r.value.toLowerCase() === v.toLowerCase())) return;
      rows.push({ value: v, tenths: 0 });
      if (asList || rows.length === 1) equalShares(rows);
      else setShare(rows, rows.length - 1, Math.round(TOTAL / rows.length));
      commit(true);
    };
    add.addEventListener("keydown", (e) => { if (e.key === "Enter") addValue(); });
    refresh();
    return h("div", {},
      stack, list,
      h("div", { class: "fdta-row", style: { marginTop: "6px" } },
        add, h("button", { onclick: addValue }, "Add"),
        h("button", { testid: `fdta-equal-${key}`, onclick: () => { equalShares(rows); asList = true; commit(true); } }, "Equal shares"),
        removeList ? h("button", { class: "fdta-ghost", onclick: removeList }, "Use the shared list") : null,
        h("span", { class: "fdta-grow" }), sumEl));
  }

  // ------------------------------------------------------------------------------------- checking
  changed(structural) {
    if (structural) this.render();
    this.setStatus("busy", "checking…");
    this.schedule();
  }

  text() {
    if (!this.spec) return this.originalText;
    const now = formatSpec(this.ordered());
    return now === this.initial ? this.originalText : now;
  }

  /** The spec with its fields in the order the node describes them (unknown keys kept after them). */
  ordered() {
    const fields = this.fields();
    const out = {};
    for (const k of FIELDS) if (k in fields) out[k] = fields[k];
    for (const k of Object.keys(fields)) if (!(k in out)) out[k] = fields[k];
    const spec = {};
    for (const [k, v] of Object.entries(this.spec)) spec[k] = k === "fields" ? out : v;
    return spec;
  }

  async check() {
    if (!this.spec) return;
    const seq = ++this.previewSeq;
    let data;
    try {
      const res = await api.fetchApi("/fdta/spec/preview", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ spec: this.text(), seed: this.preview.seed, identity_start: this.preview.start, count: this.preview.count }),
      });
      data = await res.json();
      if (!res.ok && !data.errors) data = { ok: false, errors: [{ where: data.where || "request", message: data.error || res.statusText, fix: data.fix || "" }] };
    } catch (e) {
      data = { ok: false, errors: [{ where: "server", message: `the server did not answer (${e.message || e})`, fix: "is ComfyUI running?" }] };
    }
    if (seq !== this.previewSeq) return; // a newer edit is already being checked
    this.error = data.ok ? null : data.errors?.[0] || { where: "spec", message: "invalid" };
    if (data.ok) this.lastPreview = data;
    this.setStatus(data.ok ? "ok" : "bad", data.ok ? `valid · spec ${data.hash}` : "invalid");
    this.markError();
    this.renderSide();
  }

  setStatus(kind, text) {
    this.status.className = `fdta-pill ${kind}`;
    this.status.textContent = kind === "ok" ? `✓ ${text}` : kind === "bad" ? `✕ ${text}` : text;
    this.applyBtn.disabled = kind !== "ok";
    this.applyBtn.title = kind === "bad" ? "Fix the problem shown on the right first" : "";
  }

  /** Outline the card (and the value row) the server's message points at. */
  markError() {
    this.left.querySelectorAll(".fdta-error").forEach((e) => e.classList.remove("fdta-error"));
    const where = this.error?.where || "";
    const m = /^spec\.(fields|prompt)(?:\.([A-Za-z_]+))?(.*)$/.exec(where);
    if (!m) return;
    const field = m[1] === "prompt" ? "prompt" : m[2];
    const card = this.left.querySelector(`[data-field="${field}"]`);
    card?.classList.add("fdta-error");
    const idx = /values\[(\d+)\]/.exec(m[3] || "");
    const named = /values\.(.+)$/.exec(m[3] || "") || /bins\.(.+)$/.exec(m[3] || "");
    let row = null;
    if (idx) row = card?.querySelectorAll(".fdta-share-row")[Number(idx[1])];
    else if (named) row = [...(card?.querySelectorAll(".fdta-share-row") || [])].find((r) => r.dataset.value === named[1]);
    row?.classList.add("fdta-error");
  }

  renderSide() {
    const out = [];
    if (this.error) {
      out.push(h("div", { class: "fdta-msg bad", testid: "fdta-editor-validation" },
        h("div", {}, h("b", {}, "Problem at "), h("code", { testid: "fdta-editor-error-where" }, this.error.where)),
        h("div", {}, this.error.message),
        this.error.fix ? h("div", { class: "fdta-small", style: { marginTop: "4px" } }, h("b", {}, "Fix: "), this.error.fix) : null));
    } else if (this.lastPreview) {
      out.push(h("div", { class: "fdta-msg ok", testid: "fdta-editor-validation" },
        h("b", {}, "Valid."), ` Checked by the server with the node's own parser (spec ${this.lastPreview.hash}).`));
    }
    const num = (key, min, max, label) => h("label", { class: "fdta-row fdta-small" }, label,
      h("input", { type: "number", min, max, step: 1, value: this.preview[key], style: { width: key === "seed" ? "110px" : "64px" }, testid: `fdta-preview-${key}`,
        onchange: (e) => { this.preview[key] = Math.max(min, Math.min(max, Math.round(Number(e.target.value) || 0))); this.check(); } }));
    out.push(h("div", { class: "fdta-section-title" },
      this.error && this.lastPreview ? "Preview of the last valid spec" : "Preview: the first identities of this chunk"));
    out.push(h("div", { class: "fdta-row", style: { flexWrap: "wrap", marginBottom: "8px" } },
      num("seed", 0, Number.MAX_SAFE_INTEGER, "seed"), num("start", 0, 2 ** 31 - 1, "from #"), num("count", 1, 64, "show")));
    const list = h("div", { testid: "fdta-editor-preview" });
    const plan = this.lastPreview;
    if (plan) {
      for (const ident of plan.identities) {
        const a = ident.attributes;
        const tags = ["gender", "age", "race"].filter((k) => a[k]).map((k) => h("span", { class: "fdta-chip" }, a[k]));
        list.append(h("div", { class: "fdta-ident", testid: "fdta-preview-identity" },
          h("div", { class: "fdta-row" }, h("b", {}, `#${ident.index}`), tags),
          h("div", { class: "fdta-prompt", testid: "fdta-preview-prompt" }, ident.prompt),
          ident.dropped?.length ? h("div", { class: "fdta-small fdta-muted" }, `left out to fit CLIP's 77 tokens: ${ident.dropped.join(", ")}`) : null));
      }
      if (plan.identities.length) {
        list.append(h("div", { class: "fdta-small fdta-muted" }, h("b", {}, "Negative: "), plan.identities[0].negative));
      }
    }
    out.push(list);
    if (this.spec) {
      const changed = this.text() !== this.originalText;
      out.push(h("details", { style: { marginTop: "10px" } },
        h("summary", { class: "fdta-small" }, changed ? "JSON that Apply will write (changed)" : "JSON (unchanged)"),
        h("pre", { class: "fdta-json", testid: "fdta-editor-json" }, this.text())));
    }
    this.right.replaceChildren(...out);
  }

  // ------------------------------------------------------------------------------------- apply
  reload(text) {
    try {
      const spec = JSON.parse(text);
      if (!spec || typeof spec !== "object" || Array.isArray(spec)) throw new Error("not a JSON object");
      this.spec = spec;
      this.parseError = null;
      this.originalText = text;
    } catch (e) {
      this.parseError = String(e.message || e);
    }
    this.render();
    if (this.spec) this.initial = formatSpec(this.ordered());
    this.check();
  }

  apply() {
    const text = this.text();
    if (text !== String(this.widget.value ?? "")) {
      this.widget.value = text;
      this.widget.callback?.(text, this.app.canvas, this.node);
      this.node.onWidgetChanged?.(this.widget.name, text, this.originalText, this.widget);
      this.node.setDirtyCanvas?.(true, true);
      this.app.graph?.setDirtyCanvas?.(true, true);
      this.app.graph?.change?.();
    }
    this.close();
  }

  close() {
    if (this.dialog.open) this.dialog.close();
  }
}
