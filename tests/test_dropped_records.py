"""What the pipeline leaves out is recorded, never silently lost: identities without an acceptable ACG
candidate and images the CSIM filter drops travel with the faceset (``FaceSet.dropped``), the writer puts
them in the manifest's ``dropped`` table, merge keeps them, and ``fdta report`` lists them with the reason."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fdta_core.acg import ACGSettings, run_acg
from fdta_core.cli import main as fdta
from fdta_core.dataset.manifest import query, read_dropped
from fdta_core.dataset.merge import merge
from fdta_core.dataset.writer import write_faceset
from fdta_core.faces.csim import csim_filter
from fdta_core.faceset import Dropped, FaceSet
from tests.acg_helpers import FakeSampler, RuleAnalyzer, good, make_plan


def _acg(start: int):
    """Identities start..start+3: start+1 always looks male (planned female), the others are fine."""
    plan = make_plan(4, start=start)
    sampler = FakeSampler()

    def rule(job):
        return good(job, gender="male") if job.identity == start + 1 else good(job)

    res = run_acg(
        plan, sampler, 1, settings=ACGSettings(candidates=2, retries=1), analyzer=RuleAnalyzer(sampler, rule)
    )
    return res.faceset()


def _styled(source: FaceSet, per_identity: int = 3) -> FaceSet:
    """A stand-in for the STG stage: per identity, its source face (CSIM 1) and unrelated random faces
    (CSIM about 0)."""
    rng = np.random.default_rng(0)
    imgs, labels, prov = [], [], []
    for img, lab, p in source:
        for k in range(per_identity):
            imgs.append(img if k == 0 else rng.integers(0, 256, img.shape, dtype=np.uint8))
            labels.append(lab)
            prov.append(p.derive("stg", extra={"k": k}))
    return FaceSet(np.stack(imgs), np.array(labels), prov, dict(source.sources), dropped=list(source.dropped))


def _embed(x: np.ndarray) -> np.ndarray:
    return (x.reshape(len(x), -1).astype(np.float64) - 127.5)[:, ::97]


def test_acg_records_identities_without_a_source_and_why():
    fs = _acg(10)
    assert fs.labels.tolist() == [10, 12, 13]
    (d,) = fs.dropped
    assert (d.stage, d.identity, d.reasons) == ("acg", 11, ("gender",))
    assert (
        "no acceptable candidate after 4 candidates" in d.detail and "looks male, planned female" in d.detail
    )
    assert d.record["planned_gender"] == "female" and len(d.record["candidates"]) == 4
    assert all(c["reasons"] == ["gender"] for c in d.record["candidates"])
    # selection, concatenation and the npz round trip keep the records
    assert fs.select([0]).dropped == fs.dropped
    assert FaceSet.concat([fs, _acg(20)]).dropped[1].identity == 21


def test_npz_round_trip_keeps_dropped(tmp_path):
    fs = _acg(0)
    fs.save_npz(str(tmp_path / "f.npz"))
    assert FaceSet.load_npz(str(tmp_path / "f.npz")).dropped == fs.dropped
    assert Dropped.from_dict(fs.dropped[0].to_dict()) == fs.dropped[0]


def test_csim_filter_records_each_dropped_image_and_why():
    styled = _styled(_acg(0))
    kept, stats = csim_filter(styled, _embed, threshold=0.5, min_images_per_identity=2)
    new = kept.dropped[1:]  # after the ACG record
    assert kept.dropped[0].stage == "acg"
    assert len(new) == len(styled) - len(kept) == sum(1 for r in stats.reasons if r)
    for d in new:
        i = next(
            j
            for j, p in enumerate(styled.provenance)
            if p.identity == d.identity and p.extra["k"] == d.record["extra"]["k"]
        )
        assert d.reasons == (stats.reasons[i],)
        assert d.record["csim"] == pytest.approx(stats.csim[i], abs=1e-5)
        assert "acg" not in d.record["extra"] and d.record["history"] == ["acg", "stg"]
        if d.reasons == ("csim",):
            assert stats.csim[i] < 0.5 and "< threshold 0.500" in d.detail
        else:
            assert "min_images_per_identity 2" in d.detail
    assert {d.reasons[0] for d in new} == {"csim", "identity"}


def test_writer_merge_and_report_keep_the_dropped_records(tmp_path, capsys):
    ds = tmp_path / "ds"
    for start in (0, 4):
        kept, _ = csim_filter(_styled(_acg(start)), _embed, threshold=0.5)
        write_faceset(kept, ds, start=start, count=4)
    chunks = sorted((ds / "chunks").iterdir())
    per_chunk = [read_dropped(c / "manifest.sqlite") for c in chunks]
    assert all(rows and rows[0]["stage"] == "acg" for rows in per_chunk)
    assert [rows[0]["identity"] for rows in per_chunk] == [1, 5]

    merged = tmp_path / "merged"
    merge(merged, [ds])
    rows = read_dropped(merged / "manifest.sqlite")
    assert rows == per_chunk[0] + per_chunk[1]
    assert {r["chunk"] for r in rows} == {c.name for c in chunks}
    counts = dict(
        ((s, r), n)
        for s, r, n, _ in query(
            merged,
            "SELECT stage, json_extract(reasons, '$[0]') AS reason, count(*), 0 FROM dropped GROUP BY stage, reason",
        )
    )
    assert counts[("acg", "gender")] == 2 and counts[("csim", "csim")] == len(rows) - 2

    assert fdta(["report", str(merged), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    drop = summary["dropped"]
    assert drop["total"] == len(rows) and drop["identities_without_source"] == [1, 5]
    assert drop["by_stage"]["acg"] == {"gender": 2}
    assert [(d["stage"], d["identity"]) for d in drop["items"]] == [(r["stage"], r["identity"]) for r in rows]
    assert fdta(["report", str(merged)]) == 0
    text = capsys.readouterr().out
    assert f"dropped on the way: {len(rows)} (acg: gender 2; csim: csim {len(rows) - 2})" in text
    assert "acg: identity 1 [gender] no acceptable candidate after 4 candidates" in text
    html = (merged / "report" / "report.html").read_text()
    assert "Dropped, and why" in html and "looks male, planned female" in html


def test_renumbered_merge_says_which_set_a_dropped_identity_belongs_to(tmp_path):
    sets = []
    for name in ("a", "b"):
        kept, _ = csim_filter(_styled(_acg(0)), _embed, threshold=0.5)
        write_faceset(kept, tmp_path / name, start=0, count=4)
        sets.append(tmp_path / name)
    merge(tmp_path / "m", sets, renumber=True)
    rows = read_dropped(tmp_path / "m" / "manifest.sqlite")
    acg = [(r["identity"], r["record"]["source_set"]) for r in rows if r["stage"] == "acg"]
    assert acg == [(1, 0), (1, 1)]


def test_dropped_records_outside_the_chunk_are_refused(tmp_path):
    from fdta_core.errors import InputError

    fs = _acg(0)
    fs.dropped = [Dropped("acg", 99, ("gender",))]
    with pytest.raises(InputError, match="outside chunk"):
        write_faceset(fs, tmp_path / "ds", start=0, count=4)
    chunks = tmp_path / "ds" / "chunks"
    assert not chunks.exists() or not [c for c in chunks.iterdir() if not c.name.startswith(".")]


def test_old_manifests_without_the_table_read_as_nothing_dropped(tmp_path):
    import sqlite3

    fs = _acg(0)
    fs.dropped = []
    write_faceset(fs, tmp_path / "ds", start=0, count=4)
    (chunk,) = (tmp_path / "ds" / "chunks").iterdir()
    con = sqlite3.connect(chunk / "manifest.sqlite")
    con.execute("DROP TABLE dropped")
    con.commit()
    con.close()
    assert read_dropped(chunk / "manifest.sqlite") == []
    merge(tmp_path / "m", [tmp_path / "ds"])
    assert read_dropped(tmp_path / "m" / "manifest.sqlite") == []
