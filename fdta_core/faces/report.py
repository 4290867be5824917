"""Data-set report: metrics (DCFace uniqueness / consistency, CSIM spread, attribute balance) and an HTML
page with plots, from in-memory labels and embeddings (:func:`build_report`), or from a dataset folder
(``train.rec`` + optional ``manifest.sqlite``) through :func:`load_dataset`.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..dataset.manifest import read_dropped, read_stages
from ..dataset.writer import read_missing
from ..errors import DatasetError
from ..fsutil import atomic_write_text
from ..grid import Cell, render_grid
from ..imagecodec import decode_image, encode_png
from ..timing import stage_table
from .csim import histogram_image
from .identity import DCFACE_THRESHOLD
from .metrics import DatasetMetrics, age_bucket, compute_metrics, plan_vs_written

log = logging.getLogger(__name__)


@dataclass
class ReportData:
    """Everything a report shows. ``requested``/``achieved`` map attribute -> one value per identity
    (same identity order); ``samples`` maps identity -> a few aligned faces for the sample grid."""

    name: str
    labels: np.ndarray
    embeddings: np.ndarray | None = None
    csim: np.ndarray | None = None
    requested: dict[str, list[Any]] = field(default_factory=dict)
    achieved: dict[str, list[Any]] = field(default_factory=dict)
    samples: dict[int, list[np.ndarray]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: DCFace's intra-class diversity (:mod:`fdta_core.faces.diversity`), when style features were given
    diversity: dict[str, Any] | None = None
    source: dict[str, Any] = field(default_factory=dict)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    written: dict[int, dict[str, Any]] = field(default_factory=dict)  # identity id -> attributes
    plan: list[dict[str, Any]] = field(default_factory=list)  # ``fdta plan --json`` rows, if given
    #: identity embeddings of the ACG's source faces (the run's identity index), when given
    source_embeddings: np.ndarray | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)  # manifest ``stages`` rows (timings)
    #: planned identities the data set has no images of, with why (chunk.json / dataset.json ``missing``)
    missing: list[dict[str, Any]] = field(default_factory=list)


#: How many dropped items the JSON summary lists one by one (all are counted).
DROPPED_LISTED = 500


def dropped_summary(dropped: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What the pipeline left out, from the manifest's ``dropped`` rows: counts per stage and reason,
    the identities lost whole at ACG, and the items (stage, identity, reasons, detail, key facts)."""
    by: dict[str, dict[str, int]] = {}
    for d in dropped:
        for r in d["reasons"] or ["unknown"]:
            by.setdefault(d["stage"], {}).setdefault(r, 0)
            by[d["stage"]][r] += 1
    items = []
    for d in dropped[:DROPPED_LISTED]:
        rec = d.get("record") or {}
        item = {k: d[k] for k in ("stage", "identity", "reasons", "detail", "chunk")}
        for k in ("csim", "reference_key", "age_target", "history", "planned_gender", "planned_age"):
            if rec.get(k) is not None:
                item[k] = rec[k]
        items.append(item)
    return {
        "total": len(dropped),
        "by_stage": by,
        "identities_without_source": sorted({d["identity"] for d in dropped if d["stage"] == "acg"}),
        "items": items,
    }


def build_report(
    data: ReportData, threshold: float = DCFACE_THRESHOLD
) -> tuple[DatasetMetrics, dict[str, Any]]:
    """Metrics and the JSON summary of ``data``."""
    m = compute_metrics(
        data.labels,
        data.embeddings,
        csim=data.csim,
        requested=data.requested or None,
        achieved=data.achieved or None,
        threshold=threshold,
    )
    summary = {
        "name": data.name,
        **m.to_dict(),
        "notes": list(data.notes),
        "source": data.source,
        "dropped": dropped_summary(data.dropped),
        "stages": stage_table(data.stages),
        "missing": list(data.missing),
        "diversity": data.diversity
        or {"value": None, "note": "not measured: needs --style-model and --references"},
    }
    summary.update(diversity_summary(data))
    if data.plan:
        rows, missing = plan_vs_written(data.plan, data.written)
        summary["quotas"] = {
            "planned_identities": len(data.plan),
            "written_identities": len(data.written),
            "fields": [r.to_dict() for r in rows],
            "missing": missing,
        }
    return m, summary


def diversity_summary(data: ReportData) -> dict[str, Any]:
    """Identity diversity (``fdta_core.faces.identity_diversity``): pairwise cosine distribution, its 99th
    percentile, nearest-identity cosines and the Vendi score, of the identity centres of the written
    images and, when the run's identity index is given, of the ACG's source faces."""
    from .identity import identity_centers
    from .identity_diversity import similarity_stats

    out: dict[str, Any] = {}
    if data.embeddings is not None and len(data.labels):
        _, centers = identity_centers(np.asarray(data.embeddings), np.asarray(data.labels))
        out["identity_diversity"] = {
            "of": "identity embeddings (class centres of the written images)",
            **similarity_stats(centers).to_dict(),
        }
    if data.source_embeddings is not None and len(data.source_embeddings):
        out["source_face_diversity"] = {
            "of": "source faces (the run's identity index)",
            **similarity_stats(np.asarray(data.source_embeddings)).to_dict(),
        }
    return out


def diversity_line(name: str, d: dict[str, Any]) -> str:
    """One text line of a diversity summary."""
    if not d.get("pairs"):
        return f"{name}: {d.get('identities', 0)} identities, no pairs"
    q = d["quantiles"]
    samp = f" (sample of {d['sampled_identities']})" if d.get("sampled_identities") else ""
    return (
        f"{name}: pairwise cosine median {q['p50']:.3f}, p99 {q['p99']:.3f}, max {d['max']:.3f} over "
        f"{d['pairs']} pairs{samp}; nearest identity median {d['nearest_identity']['p50']:.3f}; "
        f"Vendi score {d['vendi_score']:.2f} of {d['identities']}"
    )


# ----------------------------------------------------------------------------- plots (uint8 RGB)
def bar_chart(
    categories: Sequence[str],
    series: dict[str, Sequence[float]],
    title: str,
    *,
    width: int = 560,
    height: int = 260,
) -> np.ndarray:
    """Grouped bars (one colour per series) with category labels; a small, dependency-free chart."""
    import cv2

    colors = [(70, 110, 200), (230, 140, 40), (60, 170, 90), (180, 60, 160)]
    img = np.full((height, width, 3), 255, np.uint8)
    m_l, m_b, m_t = 30, 40, 30
    plot_w, plot_h = width - m_l - 10, height - m_b - m_t
    top = max([float(v) for s in series.values() for v in s] + [1e-9])
    n_cat, n_ser = max(1, len(categories)), max(1, len(series))
    slot = plot_w / n_cat
    bw = max(1, int(slot * 0.8 / n_ser))
    for si, (_name, vals) in enumerate(series.items()):
        for ci, v in enumerate(vals):
            x0 = int(m_l + ci * slot + slot * 0.1 + si * bw)
            y0 = int(height - m_b - plot_h * float(v) / top)
            cv2.rectangle(img, (x0, y0), (x0 + bw - 1, height - m_b), colors[si % len(colors)], -1)
    cv2.line(img, (m_l, height - m_b), (width - 10, height - m_b), (0, 0, 0), 1)
    step = max(1, n_cat // 12)
    for ci, cat in enumerate(categories):
        if ci % step == 0:
            x = int(m_l + ci * slot + 2)
            cv2.putText(
                img,
                str(cat)[:10],
                (x, height - m_b + 14),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.35,
                (0, 0, 0),
                1,
                cv2.LINE_AA,
            )
    cv2.putText(img, title, (m_l, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for si, name in enumerate(series):
        x = width - 150
        y = 18 + 14 * si
        cv2.rectangle(img, (x, y - 8), (x + 10, y), colors[si % len(colors)], -1)
        cv2.putText(img, name, (x + 14, y), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(
        img, f"max {top:.3g}", (m_l, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (90, 90, 90), 1, cv2.LINE_AA
    )
    return img


def sample_grid(
    samples: dict[int, list[np.ndarray]], max_rows: int = 8, max_cols: int = 8, tile: int = 56
) -> np.ndarray:
    """One row of faces per identity (downscaled to ``tile`` pixels)."""
    rows = [[Cell(f) for f in faces[:max_cols]] for _ident, faces in list(samples.items())[:max_rows]]
    if not rows:
        return np.full((tile, tile, 3), 255, np.uint8)
    return render_grid(rows, tile=tile, gap=2, background=(255, 255, 255))


def _png_data_uri(img: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(img)).decode("ascii")


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "n/a" if not np.isfinite(v) else f"{v:.4f}"
    return html.escape(str(v))


def render_html(data: ReportData, metrics: DatasetMetrics, summary: dict[str, Any]) -> str:
    """A self-contained HTML page (plots embedded as PNG data URIs)."""
    figs: list[tuple[str, np.ndarray]] = []
    if data.csim is not None and np.isfinite(np.asarray(data.csim, float)).any():
        c = np.asarray(data.csim, float)
        figs.append(("CSIM to the source face", histogram_image(c[np.isfinite(c)])))
    counts = np.array(sorted(metrics.per_identity_counts.values()))
    if counts.size:
        vals, freq = np.unique(counts, return_counts=True)
        figs.append(
            (
                "Images per identity",
                bar_chart(
                    [str(v) for v in vals], {"identities": freq.tolist()}, "identities per image count"
                ),
            )
        )
    for row in metrics.balance:
        cats = sorted(set(row.requested) | set(row.achieved))
        figs.append(
            (
                f"Attribute balance: {row.attribute} ("
                + (
                    f"total variation {row.total_variation:.3f}"
                    if row.measured
                    else "achieved not measured: pass --pack with a gender/age model"
                )
                + ")",
                bar_chart(
                    cats,
                    {
                        "requested": [row.requested.get(k, 0.0) for k in cats],
                        "achieved": [row.achieved.get(k, 0.0) for k in cats],
                    },
                    row.attribute,
                ),
            )
        )
    if data.samples:
        figs.append(("Samples (one row per identity)", sample_grid(data.samples)))
    rows = [
        ("images", summary["images"]),
        ("identities", summary["identities"]),
        (
            "images per identity (mean / min / max)",
            " / ".join(_fmt(summary["images_per_identity"].get(k)) for k in ("mean", "min", "max")),
        ),
        (f"uniqueness (greedy packing, cosine {metrics.threshold})", summary["uniqueness"]),
        (
            f"intra-class consistency (cosine > {metrics.threshold} to centre)",
            summary["intra_class_consistency"],
        ),
        (
            f"intra-class diversity (DCFace D_intra, k={(summary.get('diversity') or {}).get('k', 3)})",
            (summary.get("diversity") or {}).get("value"),
        ),
        (
            "CSIM mean / std",
            f"{_fmt(summary['csim'].get('mean'))} / {_fmt(summary['csim'].get('std'))}"
            if summary["csim"]
            else None,
        ),
    ]
    for key, what in (("identity_diversity", "identity centres"), ("source_face_diversity", "source faces")):
        d = summary.get(key)
        if not d or not d.get("pairs"):
            continue
        rows.append((f"pairwise identity cosine p50 / p99 / max ({what})",
                     " / ".join(_fmt(v) for v in (d["quantiles"]["p50"], d["p99"], d["max"]))))  # fmt: skip
        rows.append((f"Vendi score: effective number of identities ({what})", d["vendi_score"]))
        h = d["histogram"]
        cats = [f"{lo:+.2f}" for lo in h["edges"][:-1]]
        lo_i = next((i for i, c in enumerate(h["counts"]) if c), 0)
        hi_i = max((i for i, c in enumerate(h["counts"]) if c), default=len(cats) - 1) + 1
        figs.append(
            (
                f"Pairwise identity cosine ({what}; p99 {d['p99']:.3f})",
                bar_chart(cats[lo_i:hi_i], {"pairs": h["counts"][lo_i:hi_i]}, "pairs per cosine bin"),
            )
        )
    drop = summary["dropped"]
    rows.append(("dropped on the way (identities at ACG, images at CSIM, ...)", drop["total"]))
    for q in (summary.get("quotas") or {}).get("fields", []):
        cats = sorted(set(q["planned"]) | set(q["written"]))
        figs.append(
            (
                f"Plan vs written: {q['field']} (max deviation {q['max_deviation']} identities)",
                bar_chart(
                    cats,
                    {
                        "planned": [q["planned"].get(k, 0) for k in cats],
                        "written": [q["written"].get(k, 0) for k in cats],
                    },
                    q["field"],
                ),
            )
        )
    table = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in rows)
    drop_rows = "".join(
        f"<tr><td>{html.escape(d['stage'])}</td><td>{d['identity']}</td>"
        f"<td>{html.escape(', '.join(d['reasons']))}</td><td>{html.escape(d['detail'])}</td></tr>"
        for d in drop["items"]
    )
    drop_html = (
        "<h2>Dropped, and why</h2><table><tr><th>stage</th><th>identity</th><th>reasons</th><th>detail</th></tr>"
        + drop_rows
        + "</table>"
        if drop_rows
        else ""
    )
    stage_rows = "".join(
        f"<tr><td>{html.escape(r['stage'])}</td><td>{html.escape(', '.join(r['nodes']))}</td>"
        f"<td>{r['chunks']}</td><td>{r['images']}</td><td>{r['seconds']:.2f}</td>"
        f"<td>{r['images_per_s']:.3g}</td><td>{100 * r['share']:.1f}%</td></tr>"
        for r in summary.get("stages") or []
    )
    stage_html = (
        "<h2>Where the time went (wall time per stage, summed over chunks)</h2><table><tr><th>stage</th>"
        "<th>node</th><th>chunks</th><th>images</th><th>seconds</th><th>images/s</th><th>share</th></tr>"
        + stage_rows
        + "</table>"
        if stage_rows
        else ""
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in data.notes)
    body = "\n".join(
        f"<h2>{html.escape(t)}</h2><img alt='{html.escape(t)}' src='{_png_data_uri(img)}'>" for t, img in figs
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>FDTA report: {html.escape(data.name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:960px}}table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:4px 8px;text-align:left}}img{{border:1px solid #ddd}}</style></head>
<body><h1>FDTA data-set report: {html.escape(data.name)}</h1>
<table>{table}</table>
{"<h2>Notes</h2><ul>" + notes + "</ul>" if notes else ""}
{drop_html}
{stage_html}
{body}
<h2>Summary (JSON)</h2><pre>{html.escape(json.dumps(summary, indent=1, default=str)[:20000])}</pre>
</body></html>
"""


def write_report(
    data: ReportData, out_dir: str | Path, threshold: float = DCFACE_THRESHOLD
) -> tuple[Path, Path, dict[str, Any]]:
    """Write ``report.html`` and ``report.json`` into ``out_dir`` (atomically); returns both paths and the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics, summary = build_report(data, threshold)
    html_path, json_path = out / "report.html", out / "report.json"
    atomic_write_text(json_path, json.dumps(summary, indent=1, sort_keys=True, default=str))
    atomic_write_text(html_path, render_html(data, metrics, summary))
    return html_path, json_path, summary


# ----------------------------------------------------------------------------- dataset on disk
def read_manifest_rows(path: Path) -> dict[int, dict[str, Any]]:
    """``key -> {identity, attributes, csim, age_target}`` from a dataset's ``manifest.sqlite`` (read-only)."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise DatasetError(f"cannot open manifest {path}: {exc}") from exc
    try:
        cols = {r[1] for r in con.execute("PRAGMA table_info(images)")}
        if "key" not in cols:
            raise DatasetError(
                f"{path} has no 'images' table with a 'key' column", fix="is this an FDTA manifest?"
            )
        want = [
            c for c in ("identity", "attributes", "csim", "age_target", "extra", "reference_key") if c in cols
        ]
        out: dict[int, dict[str, Any]] = {}
        for row in con.execute(f"SELECT key, {', '.join(want)} FROM images"):  # noqa: S608 - fixed names
            rec = dict(zip(want, row[1:], strict=True))
            if isinstance(rec.get("extra"), str):
                try:
                    extra = json.loads(rec["extra"])
                except json.JSONDecodeError:
                    extra = {}
                rec["leaked"] = extra.get("leaked_images_dropped") if isinstance(extra, dict) else None
            rec.pop("extra", None)
            if isinstance(rec.get("attributes"), str):
                try:
                    rec["attributes"] = json.loads(rec["attributes"])
                except json.JSONDecodeError:
                    rec["attributes"] = {}
            out[int(row[0])] = rec
        return out
    except sqlite3.Error as exc:
        raise DatasetError(f"cannot read manifest {path}: {exc}") from exc
    finally:
        con.close()


def _diversity(keys, labels, rows, gen_styles, style, references, models, k, cache_dir, notes):
    """DCFace's D_intra of a read set: each class's images against the references it was styled after."""
    from .diversity import intra_class_diversity, reference_faces

    per_class: dict[int, set[str]] = {}
    for key, lab in zip(keys, labels.tolist(), strict=True):
        ref = (rows.get(key) or {}).get("reference_key")
        if ref:
            per_class.setdefault(int(lab), set()).add(str(ref))
    if not per_class:
        notes.append("diversity not measured: the manifest names no reference image (no STG stage?)")
        return {"value": None, "k": int(k), "note": "no reference_key in the manifest"}
    faces = reference_faces(references, sorted(set().union(*per_class.values())), models=models,
                            cache_dir=cache_dir)  # fmt: skip
    order = sorted(faces)
    feats = np.asarray(style(np.stack([faces[r] for r in order])), np.float32) if order else None
    at = {r: i for i, r in enumerate(order)}
    real_rows, real_labels = [], []
    for lab, refs in sorted(per_class.items()):
        for r in sorted(refs):
            if r in at:
                real_rows.append(at[r])
                real_labels.append(lab)
    if feats is None or not real_rows:
        notes.append(f"diversity not measured: none of the reference images is in {references}")
        return {"value": None, "k": int(k), "note": f"references not found in {references}"}
    res = intra_class_diversity(feats[real_rows], real_labels, gen_styles, labels, int(k))
    if res.skipped:
        notes.append(
            f"diversity: {len(res.skipped)} identit{'y' if len(res.skipped) == 1 else 'ies'} left out "
            f"({'; '.join(sorted(set(res.skipped.values())))})"
        )
    return res.to_dict()


def load_dataset(
    folder: str | Path,
    models: Any | None = None,
    *,
    max_images: int = 0,
    samples_per_identity: int = 6,
    sample_identities: int = 8,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
    style: Callable[[np.ndarray], np.ndarray] | None = None,
    references: str | Path | None = None,
    diversity_k: int = 3,
    cache_dir: str | Path | None = None,
) -> ReportData:
    """Read a written dataset (``train.rec``/``.idx`` + optional ``manifest.sqlite``) into :class:`ReportData`.

    With ``models`` (a :class:`~fdta_core.faces.pack.FaceModels`) the images are embedded (uniqueness,
    consistency) and, when the pack has a gender/age model, gender and age are predicted per image
    (majority gender and median age per identity = *achieved*). *Requested* attributes come from the
    manifest. ``max_images`` > 0 reads only the first identities that fit.

    With ``style`` (style features of aligned faces, :class:`~fdta_core.faces.diversity.StyleModel`) and
    ``references`` (the reference bank's folder or ``.rec``) DCFace's intra-class diversity is measured:
    each identity's images against the reference images they were styled after (``reference_key``).
    """
    from ..recordio import RecordReader, read_layout

    root = Path(folder)
    if not (root / "train.rec").is_file():
        hint = (
            "merge its chunks first (fdta rec merge OUT DATASET; empty chunks are welcome) and report on "
            "OUT, or report on one chunk folder (DATASET/chunks/<start>-<end>)."
            if (root / "chunks").is_dir()
            else "pass the dataset folder (train.rec, train.idx, property)."
        )
        raise DatasetError(f"{root} holds no train.rec", fix=hint)
    reader = RecordReader(root / "train.rec")
    notes: list[str] = []
    try:
        layout = read_layout(reader, scan_labels=True)
        keys = list(layout.image_keys)
        labels = np.asarray(layout.labels, np.int64)
        if max_images and len(keys) > max_images:
            keep = max_images
            if layout.kind == "insightface":  # whole identities only
                cut = labels[keep - 1]
                keep = int(np.searchsorted(labels, cut, side="right"))
            keys, labels = keys[:keep], labels[:keep]
            notes.append(
                f"report limited to the first {len(keys)} of {layout.num_images} images (--max-images)"
            )
        manifest_path = root / "manifest.sqlite"
        rows = read_manifest_rows(manifest_path) if manifest_path.is_file() else {}
        dropped = read_dropped(manifest_path) if manifest_path.is_file() else []
        stages = read_stages(manifest_path) if manifest_path.is_file() else []
        if not rows:
            notes.append("no manifest.sqlite: requested attributes and CSIM are unknown")
        measure_style = style is not None and references is not None
        need_pixels = models is not None or measure_style
        embeddings, genders, ages, styles = [], [], [], []
        samples: dict[int, list[np.ndarray]] = {}
        buf: list[np.ndarray] = []

        def flush() -> None:
            if not buf:
                return
            batch = np.stack(buf)
            if measure_style:
                styles.append(np.asarray(style(batch), np.float32))
            if models is not None:
                embeddings.append(models.embed(batch, batch_size=batch_size))
            if models is not None and getattr(models, "genderage", None) is not None:
                g, a = models.gender_age_aligned(batch, batch_size=batch_size)
                genders.extend(g)
                ages.extend(a)
            buf.clear()

        for n, (key, lab) in enumerate(zip(keys, labels.tolist(), strict=True)):
            want_sample = (lab in samples or len(samples) < sample_identities) and len(
                samples.get(lab, [])
            ) < samples_per_identity
            if need_pixels or want_sample:
                _h, payload = reader.read_unpacked(key)
                img = decode_image(payload, where=f"{reader.rec_path}: record {key}")
                if img.shape[:2] != (112, 112):
                    raise DatasetError(
                        f"{reader.rec_path}: record {key} is {img.shape[1]}x{img.shape[0]}, not 112x112"
                    )
                if want_sample:
                    samples.setdefault(lab, []).append(img)
                if need_pixels:
                    buf.append(img)
                    if len(buf) >= batch_size:
                        flush()
            if progress is not None:
                progress(n + 1, len(keys))
        if need_pixels:
            flush()
    finally:
        reader.close()

    ids = list(dict.fromkeys(labels.tolist()))
    first_row: dict[int, dict[str, Any]] = {}
    csim = np.full(len(keys), np.nan)
    for i, (key, lab) in enumerate(zip(keys, labels.tolist(), strict=True)):
        r = rows.get(key)
        if r is None:
            continue
        first_row.setdefault(lab, r)
        if r.get("csim") is not None:
            csim[i] = float(r["csim"])
    requested: dict[str, list[Any]] = {}
    if first_row:
        attrs = [first_row.get(lab, {}).get("attributes") or {} for lab in ids]
        if any("gender" in a for a in attrs):
            requested["gender"] = [a.get("gender") for a in attrs]
        age_req = [
            a.get("age", first_row.get(lab, {}).get("age_target")) for a, lab in zip(attrs, ids, strict=True)
        ]
        if any(v is not None for v in age_req):
            requested["age"] = [age_bucket(v) for v in age_req]
    achieved: dict[str, list[Any]] = {}
    if genders:
        g_arr, a_arr = np.array(genders), np.array(ages, float)
        achieved["gender"], achieved["age"] = [], []
        for lab in ids:
            sel = labels == lab
            vals, cnt = np.unique(g_arr[sel], return_counts=True)
            achieved["gender"].append(str(vals[np.argmax(cnt)]))
            achieved["age"].append(age_bucket(float(np.median(a_arr[sel]))))
    elif models is not None:
        notes.append("the face pack has no gender/age model: achieved attributes are unknown")
    if models is None:
        notes.append(
            "no face models given: uniqueness and consistency need embeddings (--insightface-dir/--pack)"
        )
    leaks = [r.get("leaked") for r in first_row.values() if r.get("leaked") is not None]
    if leaks:
        notes.append(
            f"{int(sum(leaks))} styled image(s) dropped by the CSIM filter because their reference subject's "
            "identity leaked in"
        )
    written = {
        int(r["identity"]): dict(r.get("attributes") or {})
        for r in first_row.values()
        if r.get("identity") is not None
    }
    missing = read_missing(root)
    diversity = None
    if measure_style and len(keys):
        diversity = _diversity(
            keys,
            labels,
            rows,
            np.concatenate(styles),
            style,
            references,
            models,
            diversity_k,
            cache_dir,
            notes,
        )
    if not len(keys):
        notes.append(
            "the data set has no images (every planned identity was rejected: see 'missing' and 'dropped'); "
            "nothing to measure"
        )
    return ReportData(
        diversity=diversity,
        missing=missing,
        written=written,
        name=root.name,
        labels=labels,
        embeddings=np.concatenate(embeddings) if embeddings else None,
        csim=csim if np.isfinite(csim).any() else None,
        requested=requested,
        achieved=achieved,
        samples=samples,
        notes=notes,
        dropped=dropped,
        stages=stages,
        source={
            "leaked_images_dropped": int(sum(leaks)) if leaks else None,
            "folder": str(root),
            "layout": layout.kind,
            "images_total": layout.num_images,
            "classes": layout.num_classes,
        },
    )
