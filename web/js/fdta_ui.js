// ComfyUI-FDTA: small DOM helpers and the pack's styles. Every rule is scoped under .fdta-ui, so nothing
// here restyles ComfyUI; colours come from the frontend's own CSS variables (light and dark palettes).

export function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "style" && typeof v === "object") Object.assign(e.style, v);
    else if (k.startsWith("on") && typeof v === "function") e.addEventListener(k.slice(2).toLowerCase(), v);
    else if (k === "testid") e.dataset.testid = v;
    else if (k === "value") e.value = v;
    else if (k in e && typeof v !== "string") e[k] = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const CSS = `
.fdta-ui { --fdta-accent: var(--p-primary-color, #4f9cf5); --fdta-ok: #3fb27f; --fdta-bad: #e5534b;
  --fdta-warn: #d9a33f; --fdta-card: var(--comfy-menu-secondary-bg, rgba(127,127,127,0.08));
  --fdta-line: var(--border-color, rgba(127,127,127,0.3)); --fdta-muted: var(--descrip-text, #999);
  color: var(--fg-color, #ddd); font: 13px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
.fdta-ui * { box-sizing: border-box; }
.fdta-ui input, .fdta-ui select, .fdta-ui textarea { background: var(--comfy-input-bg, #222);
  color: var(--input-text, #ddd); border: 1px solid var(--fdta-line); border-radius: 6px; padding: 4px 7px;
  font: inherit; min-width: 0; }
.fdta-ui textarea { width: 100%; resize: vertical; }
.fdta-ui input:focus, .fdta-ui select:focus, .fdta-ui textarea:focus { outline: 1px solid var(--fdta-accent);
  border-color: var(--fdta-accent); }
.fdta-ui button { background: var(--comfy-input-bg, #333); color: var(--input-text, #ddd); cursor: pointer;
  border: 1px solid var(--fdta-line); border-radius: 6px; padding: 4px 11px; font: inherit; }
.fdta-ui button:hover { border-color: var(--fdta-accent); }
.fdta-ui button.fdta-primary { background: var(--fdta-accent); border-color: var(--fdta-accent); color: #fff; }
.fdta-ui button.fdta-primary:disabled { opacity: .45; cursor: not-allowed; }
.fdta-ui button.fdta-ghost { background: transparent; border-color: transparent; color: var(--fdta-muted);
  padding: 2px 6px; }
.fdta-ui button.fdta-ghost:hover { color: var(--fg-color); border-color: var(--fdta-line); }
.fdta-ui .fdta-muted { color: var(--fdta-muted); }
.fdta-ui .fdta-small { font-size: 11.5px; }
.fdta-ui .fdta-pill { display: inline-flex; align-items: center; gap: 5px; border-radius: 999px;
  padding: 1px 9px; font-size: 12px; border: 1px solid var(--fdta-line); white-space: nowrap; }
.fdta-ui .fdta-pill.ok { color: var(--fdta-ok); border-color: var(--fdta-ok); }
.fdta-ui .fdta-pill.bad { color: var(--fdta-bad); border-color: var(--fdta-bad); }
.fdta-ui .fdta-pill.busy { color: var(--fdta-warn); border-color: var(--fdta-warn); }
.fdta-ui .fdta-card { background: var(--fdta-card); border: 1px solid var(--fdta-line); border-radius: 10px;
  padding: 10px 12px; margin-bottom: 10px; }
.fdta-ui .fdta-card.fdta-error { border-color: var(--fdta-bad); box-shadow: 0 0 0 1px var(--fdta-bad) inset; }
.fdta-ui .fdta-card.fdta-off { opacity: .55; }
.fdta-ui .fdta-card h3 { margin: 0; font-size: 13.5px; font-weight: 600; letter-spacing: .01em; }
.fdta-ui .fdta-row { display: flex; align-items: center; gap: 8px; }
.fdta-ui .fdta-grow { flex: 1 1 auto; }
.fdta-ui .fdta-bar { height: 6px; border-radius: 3px; background: var(--fdta-line); overflow: hidden; }
.fdta-ui .fdta-bar > span { display: block; height: 100%; background: var(--fdta-accent);
  transition: width .25s ease; }

/* dialog */
dialog.fdta-dialog { padding: 0; border: 1px solid var(--fdta-line); border-radius: 14px; max-width: none;
  width: min(1240px, 95vw); height: min(860px, 92vh); background: var(--comfy-menu-bg, #202020);
  box-shadow: 0 24px 80px rgba(0,0,0,.55); overflow: hidden; }
dialog.fdta-dialog::backdrop { background: rgba(0,0,0,.55); }
.fdta-editor { display: grid; grid-template-rows: auto 1fr auto; height: 100%; }
.fdta-editor > header { display: flex; align-items: center; gap: 12px; padding: 12px 18px;
  border-bottom: 1px solid var(--fdta-line); }
.fdta-editor > header h2 { margin: 0; font-size: 16px; font-weight: 600; }
.fdta-editor > main { display: grid; grid-template-columns: minmax(0, 1.35fr) minmax(0, 1fr); min-height: 0; }
.fdta-editor > main > section { overflow: auto; padding: 14px 16px; min-height: 0; }
.fdta-editor > main > section + section { border-left: 1px solid var(--fdta-line); }
.fdta-editor > footer { display: flex; align-items: center; gap: 8px; padding: 10px 18px;
  border-top: 1px solid var(--fdta-line); }
.fdta-editor .fdta-section-title { font-size: 11px; text-transform: uppercase; letter-spacing: .08em;
  color: var(--fdta-muted); margin: 4px 0 8px; }
.fdta-editor .fdta-field-head { display: flex; align-items: center; gap: 10px; flex-wrap: wrap; }
.fdta-editor .fdta-field-head label { display: inline-flex; align-items: center; gap: 6px; }
.fdta-editor .fdta-field-body { margin-top: 8px; }
.fdta-editor .fdta-kv { display: grid; grid-template-columns: 110px 1fr; gap: 6px 10px; align-items: center; }
.fdta-editor .fdta-share-row { display: grid; grid-template-columns: minmax(120px, 1.2fr) minmax(90px, 1.6fr) 74px 22px 26px;
  gap: 8px; align-items: center; padding: 2px 0; }
.fdta-editor .fdta-share-row.fdta-error input[type=text] { border-color: var(--fdta-bad); }
.fdta-editor .fdta-share-row input[type=range] { width: 100%; accent-color: var(--fdta-accent); padding: 0; border: 0;
  background: transparent; }
.fdta-editor .fdta-share-row input[type=number] { width: 74px; text-align: right; }
.fdta-editor .fdta-sum { font-variant-numeric: tabular-nums; }
.fdta-editor .fdta-tabs { display: flex; gap: 2px; border-bottom: 1px solid var(--fdta-line); margin: 8px 0 6px;
  flex-wrap: wrap; }
.fdta-editor .fdta-tab { background: transparent; border: 0; border-bottom: 2px solid transparent; border-radius: 0;
  padding: 4px 10px; color: var(--fdta-muted); }
.fdta-editor .fdta-tab[aria-selected=true] { color: var(--fg-color); border-bottom-color: var(--fdta-accent); }
.fdta-editor .fdta-chip { display: inline-block; padding: 0 7px; border-radius: 5px; margin: 2px 3px 0 0;
  background: var(--fdta-line); font-size: 11.5px; font-variant-numeric: tabular-nums; }
.fdta-editor .fdta-msg { border-radius: 8px; padding: 8px 10px; margin-bottom: 10px; }
.fdta-editor .fdta-msg.ok { background: rgba(63,178,127,.12); border: 1px solid rgba(63,178,127,.5); }
.fdta-editor .fdta-msg.bad { background: rgba(229,83,75,.12); border: 1px solid rgba(229,83,75,.6); }
.fdta-editor .fdta-msg code { font-size: 12px; }
.fdta-editor .fdta-ident { border: 1px solid var(--fdta-line); border-radius: 8px; padding: 7px 9px; margin-bottom: 7px; }
.fdta-editor .fdta-ident .fdta-prompt { margin-top: 4px; font-size: 12.5px; }
.fdta-editor .fdta-ident b { font-variant-numeric: tabular-nums; }
.fdta-editor pre.fdta-json { white-space: pre-wrap; word-break: break-word; font-size: 11.5px; max-height: 320px;
  overflow: auto; background: var(--comfy-input-bg, #1b1b1b); padding: 8px; border-radius: 8px; margin: 0; }
.fdta-editor .fdta-swatch { width: 10px; height: 10px; border-radius: 2px; display: inline-block; }
.fdta-editor .fdta-stack { display: flex; height: 8px; border-radius: 4px; overflow: hidden; margin: 6px 0 2px; }
.fdta-editor .fdta-stack > span { display: block; height: 100%; }

/* run panel */
.fdta-panel { padding: 10px 12px 24px; height: 100%; overflow: auto; }
.fdta-panel h2 { font-size: 15px; margin: 2px 0 10px; font-weight: 600; display: flex; align-items: center; gap: 8px; }
.fdta-panel .fdta-stat { display: grid; grid-template-columns: 1fr auto; gap: 2px 8px; font-variant-numeric: tabular-nums; }
.fdta-panel .fdta-big { font-size: 22px; line-height: 1.2; font-weight: 600; font-variant-numeric: tabular-nums; }
.fdta-panel .fdta-stage { margin: 6px 0; }
.fdta-panel .fdta-stage .fdta-row { justify-content: space-between; font-size: 12px; }
.fdta-panel svg { display: block; width: 100%; }
.fdta-panel img.fdta-sheet { width: 100%; border-radius: 6px; border: 1px solid var(--fdta-line); cursor: zoom-in;
  image-rendering: auto; background: #000; }
.fdta-panel table { width: 100%; border-collapse: collapse; font-size: 12px; font-variant-numeric: tabular-nums; }
.fdta-panel td, .fdta-panel th { padding: 3px 4px; text-align: left; border-bottom: 1px solid var(--fdta-line); }
.fdta-panel th { color: var(--fdta-muted); font-weight: 500; }
.fdta-panel a { color: var(--fdta-accent); }
.fdta-panel .fdta-name { word-break: break-all; }
.fdta-panel code.fdta-cmd { display: block; margin-top: 3px; padding: 3px 6px; border-radius: 5px; font-size: 11px;
  background: var(--comfy-input-bg, #1b1b1b); word-break: break-all; user-select: all; }
.fdta-panel .fdta-card > b { display: block; }
.fdta-panel .fdta-legend { display: flex; gap: 10px; flex-wrap: wrap; font-size: 11.5px; margin-top: 4px; }
.fdta-panel .fdta-legend span { display: inline-flex; align-items: center; gap: 4px; }
`;

export function ensureStyles() {
  if (document.getElementById("fdta-styles")) return;
  document.head.append(h("style", { id: "fdta-styles" }, CSS));
}

/** A 0..1 progress bar element. */
export function bar(fraction, color) {
  const f = Math.max(0, Math.min(1, Number(fraction) || 0));
  return h("div", { class: "fdta-bar" }, h("span", { style: { width: `${(f * 100).toFixed(1)}%`, background: color } }));
}

export function debounce(fn, ms) {
  let t = null;
  return (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
}
