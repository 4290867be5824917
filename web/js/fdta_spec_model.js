// ComfyUI-FDTA: the attribute spec as the editor sees it (pure functions, no DOM).
//
// The spec JSON text in the FDTAAttributeSpec widget is the source of truth. The editor parses it into a
// plain object, edits that object in place (keys it does not know, such as "comment", are kept) and writes
// it back with formatSpec(). Proportions are kept as integer tenths of a percent that always sum to 1000,
// and written as weights (tenths / 1000) that the server's parser normalises exactly.

export const FIELDS = [
  "gender", "race", "age", "eyes", "eyebrows", "nose", "face_shape", "lips", "hair", "jawline", "cheeks",
  "expression",
];
export const BY_CHOICES = ["gender", "race", "age"];
export const TOTAL = 1000; // tenths of a percent

/** [{value, tenths}] of a values entry: a list (equal shares) or an object value -> weight. */
export function valuesToRows(values) {
  let items = [];
  if (Array.isArray(values)) items = values.map((v) => [String(v), 1]);
  else if (values && typeof values === "object") {
    items = Object.entries(values).map(([v, w]) => [v, Number(w) > 0 ? Number(w) : 0]);
  }
  const sum = items.reduce((a, [, w]) => a + w, 0);
  if (!items.length) return [];
  const raw = items.map(([, w]) => (sum > 0 ? (w / sum) * TOTAL : TOTAL / items.length));
  const tenths = roundToTotal(raw, TOTAL);
  return items.map(([v], i) => ({ value: v, tenths: tenths[i] }));
}

/** Largest-remainder rounding of non-negative numbers to integers that sum to `total`. */
export function roundToTotal(raw, total) {
  const floors = raw.map((x) => Math.floor(x));
  let left = total - floors.reduce((a, b) => a + b, 0);
  const order = raw.map((x, i) => [x - Math.floor(x), i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  for (let k = 0; left > 0 && order.length; k = (k + 1) % order.length, left--) floors[order[k][1]] += 1;
  return floors;
}

/**
 * Set row `index` to `tenths` (clamped to [1, TOTAL - (n-1)]) and rescale the others in proportion to
 * their current shares so that the sum stays TOTAL; every value keeps at least 0.1 %.
 */
export function setShare(rows, index, tenths) {
  const n = rows.length;
  if (n === 0) return rows;
  if (n === 1) {
    rows[0].tenths = TOTAL;
    return rows;
  }
  const t = Math.max(1, Math.min(TOTAL - (n - 1), Math.round(Number(tenths) || 0)));
  const others = rows.map((r, i) => i).filter((i) => i !== index);
  const rest = TOTAL - t;
  const base = others.map((i) => Math.max(rows[i].tenths, 0));
  const baseSum = base.reduce((a, b) => a + b, 0);
  // keep 1 tenth for each other value, share the remainder in proportion to their current shares
  const free = rest - others.length;
  const raw = base.map((b) => (baseSum > 0 ? (b / baseSum) * free : free / others.length));
  const ints = roundToTotal(raw, free);
  rows[index].tenths = t;
  others.forEach((i, k) => (rows[i].tenths = ints[k] + 1));
  return rows;
}

export function equalShares(rows) {
  const ints = roundToTotal(rows.map(() => TOTAL / rows.length), TOTAL);
  rows.forEach((r, i) => (r.tenths = ints[i]));
  return rows;
}

export function allEqual(rows) {
  if (!rows.length) return true;
  const eq = roundToTotal(rows.map(() => TOTAL / rows.length), TOTAL);
  return rows.every((r, i) => r.tenths === eq[i]) || rows.every((r) => r.tenths === rows[0].tenths);
}

/** The JSON form of rows: a list when the shares are equal and `preferList`, else value -> weight. */
export function rowsToValues(rows, preferList) {
  if (preferList && allEqual(rows)) return rows.map((r) => r.value);
  const out = {};
  for (const r of rows) out[r.value] = Number((r.tenths / TOTAL).toFixed(4));
  return out;
}

export function percent(tenths) {
  return (tenths / 10).toFixed(1);
}

/** Age bins of a spec's age entry, as the server's parser makes them: [{lo, hi, label}]. */
export function ageBins(age) {
  if (!age || typeof age !== "object") return [];
  if (age.bins && typeof age.bins === "object") {
    return Object.keys(age.bins)
      .map((label) => {
        const m = /^\s*(\d+)\s*-\s*(\d+)\s*$/.exec(label);
        return m ? { lo: +m[1], hi: +m[2], label: `${+m[1]}-${+m[2]}` } : null;
      })
      .filter(Boolean)
      .sort((a, b) => a.lo - b.lo);
  }
  const lo = Number.isInteger(age.min) ? age.min : 18;
  const hi = Number.isInteger(age.max) ? age.max : 80;
  const width = Number.isInteger(age.bin_width) && age.bin_width > 0 ? age.bin_width : 10;
  const out = [];
  for (let a = lo; a <= hi && out.length < 200; a += width) {
    const b = Math.min(a + width - 1, hi);
    out.push({ lo: a, hi: b, label: `${a}-${b}` });
  }
  return out;
}

/** The case keys a `by` field offers: gender/race values, or age bin labels. */
export function caseKeys(spec, by) {
  const fields = spec?.fields || {};
  if (by === "age") return ageBins(fields.age).map((b) => b.label);
  const f = fields[by];
  if (!f) return [];
  const v = Array.isArray(f) ? f : f.values;
  if (Array.isArray(v)) return v.map(String);
  if (v && typeof v === "object") return Object.keys(v);
  return [];
}

// ------------------------------------------------------------------------------------------ formatting
const INLINE_LIMIT = 100;

function isPrimitive(v) {
  return v === null || typeof v !== "object";
}

function inline(v) {
  if (isPrimitive(v)) return JSON.stringify(v);
  if (Array.isArray(v)) return "[" + v.map(inline).join(", ") + "]";
  return "{" + Object.entries(v).map(([k, x]) => JSON.stringify(k) + ": " + inline(x)).join(", ") + "}";
}

function fmt(v, indent) {
  if (isPrimitive(v)) return JSON.stringify(v);
  const flat = inline(v);
  const leafy = Array.isArray(v) ? v.every(isPrimitive) : Object.values(v).every(isPrimitive);
  if (leafy && (Array.isArray(v) || flat.length + indent.length <= INLINE_LIMIT)) return flat;
  if (!leafy && flat.length + indent.length <= 60) return flat;
  const inner = indent + "  ";
  if (Array.isArray(v)) return "[\n" + v.map((x) => inner + fmt(x, inner)).join(",\n") + "\n" + indent + "]";
  const body = Object.entries(v).map(([k, x]) => inner + JSON.stringify(k) + ": " + fmt(x, inner));
  return "{\n" + body.join(",\n") + "\n" + indent + "}";
}

/** The spec as readable JSON: one line per field and per value list (like the shipped default spec). */
export function formatSpec(spec) {
  return fmt(spec, "") + "\n";
}

/** Deep copy through JSON (the spec is plain JSON data). */
export function clone(v) {
  return JSON.parse(JSON.stringify(v));
}
