"""DCFace metrics (uniqueness, intra-class consistency), CSIM spread and attribute balance against
independent numpy computations."""

from __future__ import annotations

import numpy as np
import pytest

from fdta_core.faces.metrics import (
    age_bucket,
    attribute_balance,
    class_centers,
    compute_metrics,
    csim_spread,
    greedy_packing,
    intra_class_consistency,
    uniqueness,
)


def _clustered(rng, n_classes=12, per=6, dim=256, spread=0.35, duplicates=((3, 0), (7, 2))):
    centres = rng.normal(size=(n_classes, dim))
    for a, b in duplicates:  # make some classes repeat an earlier identity
        centres[a] = centres[b] + rng.normal(0, 0.1, dim)
    emb, lab = [], []
    for c in range(n_classes):
        for _ in range(per):
            emb.append(centres[c] + rng.normal(0, spread * np.linalg.norm(centres[c]) / np.sqrt(dim), dim))
            lab.append(c)
    return np.array(emb), np.array(lab)


def _ref_centres(emb, lab):
    out = {}
    for c in sorted(set(lab.tolist())):
        rows = emb[lab == c]
        rows = rows / np.sqrt((rows**2).sum(1))[:, None]
        m = rows.mean(0)
        out[c] = m / np.sqrt((m**2).sum())
    return out


def test_centres(rng):
    emb, lab = _clustered(rng)
    ids, cen = class_centers(emb, lab)
    ref = _ref_centres(emb, lab)
    assert ids.tolist() == sorted(ref)
    np.testing.assert_allclose(cen, np.stack([ref[c] for c in ids]), atol=1e-12)


@pytest.mark.parametrize("thr", [0.3, 0.1, 0.6])
def test_uniqueness_equals_independent_packing(rng, thr):
    emb, lab = _clustered(rng)
    ref = _ref_centres(emb, lab)
    # independent: greedy packing with L2 balls of radius r = sqrt(2 - 2 * thr) on the unit sphere
    r = np.sqrt(2 - 2 * thr)
    packed = []
    for c in sorted(ref):
        if all(np.linalg.norm(ref[c] - ref[p]) >= r - 1e-12 for p in packed):
            packed.append(c)
    assert uniqueness(emb, lab, thr) == pytest.approx(len(packed) / len(ref))
    assert greedy_packing(np.stack([ref[c] for c in sorted(ref)]), thr).tolist() == [
        sorted(ref).index(p) for p in packed
    ]
    if thr == 0.3:
        assert len(packed) == 10  # the two planted duplicates are not unique


def test_consistency_equals_independent(rng):
    emb, lab = _clustered(rng, per=20, spread=4.5)
    ref = _ref_centres(emb, lab)
    inside = [float(np.dot(e, ref[c]) / np.linalg.norm(e)) > 0.3 for e, c in zip(emb, lab, strict=True)]
    overall, per = intra_class_consistency(emb, lab, 0.3)
    assert overall == pytest.approx(np.mean(inside))
    assert 0 < overall < 1
    for c in ref:
        assert per[c] == pytest.approx(np.mean([x for x, lc in zip(inside, lab, strict=True) if lc == c]))


def test_csim_spread_matches_numpy(rng):
    c = rng.uniform(0.2, 0.8, 200)
    s = csim_spread(np.concatenate([c, [np.nan]]))
    assert s["count"] == 200
    assert s["mean"] == pytest.approx(c.mean()) and s["std"] == pytest.approx(c.std())
    assert s["quantiles"]["p50"] == pytest.approx(np.median(c))
    counts, _ = np.histogram(c, bins=20, range=(-1, 1))
    assert s["histogram"]["counts"] == counts.tolist()
    assert csim_spread(np.array([np.nan])) == {"count": 0}


def test_attribute_balance():
    rows = attribute_balance(
        {"gender": ["male", "female", "female", "male"], "age": ["20-29"] * 4},
        {"gender": ["male", "male", "female", None], "age": ["20-29", "30-39", "20-29", "20-29"]},
    )
    g = next(r for r in rows if r.attribute == "gender")
    assert g.requested == {"female": 0.5, "male": 0.5}
    assert g.achieved == pytest.approx({"female": 1 / 3, "male": 2 / 3})
    assert g.total_variation == pytest.approx(1 / 6)
    a = next(r for r in rows if r.attribute == "age")
    assert a.total_variation == pytest.approx(0.25)
    assert [age_bucket(x) for x in (5, 20, 29.9, 45, 60, 99, None, "young")] == [
        "<20",
        "20-29",
        "20-29",
        "40-49",
        "60+",
        "60+",
        None,
        "young",
    ]


def test_compute_metrics_all(rng):
    emb, lab = _clustered(rng)
    m = compute_metrics(
        lab, emb, csim=np.full(len(lab), 0.5), requested={"gender": ["m"]}, achieved={"gender": ["f"]}
    )
    d = m.to_dict()
    assert d["images"] == len(lab) and d["identities"] == 12
    assert d["images_per_identity"] == {"mean": 6.0, "min": 6, "max": 6, "median": 6.0}
    assert d["uniqueness"] == pytest.approx(uniqueness(emb, lab))
    assert d["attribute_balance"][0]["total_variation"] == 1.0
    assert d["csim"]["mean"] == pytest.approx(0.5)
    only_counts = compute_metrics(lab)
    assert only_counts.uniqueness is None and only_counts.csim == {}
