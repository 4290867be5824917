"""Quotas held in what is written: identities rejected by the ACG are regenerated with new deterministic
attempt seeds, so a written chunk's per-value counts of the quota fields equal the plan's within one
identity, and ``fdta report --plan`` shows plan vs written per field and the missing identities."""

from __future__ import annotations

import json

import numpy as np

from fdta_core.acg import ACGSettings, FaceAnalysis, run_acg
from fdta_core.cli import main
from fdta_core.dataset.writer import write_faceset
from fdta_core.faceset import FaceSet
from fdta_core.prompts.planner import build_plan
from fdta_core.prompts.spec import load_spec
from tests.acg_helpers import FakeSampler, embedding_for

N = 12


def _analyzer(sampler, reject):
    class A:
        def analyze(self, images):
            out = []
            for img in images:
                j = sampler.job_of(img)
                ok = not reject(j)
                face = np.full((112, 112, 3), 40 + 15 * (j.identity % 12), np.uint8)
                out.append(
                    FaceAnalysis(
                        True, 0.9 if ok else 0.1, aligned=face, embedding=embedding_for(j.identity, 32)
                    )
                )
            return out

        def embed_aligned(self, faces):  # pragma: no cover - not used by run_acg
            raise AssertionError

    return A()


def _plan_rows(plan):
    return [{"index": i.index, "attributes": i.attributes, "extra": i.extra} for i in plan]


def _write_and_report(tmp_path, capsys, plan, result, name):
    # every chosen identity gets 3 images (the source and two copies: what STG would style)
    src = result.faceset()
    fs = FaceSet.concat([src, src, src])
    order = np.argsort(fs.labels, kind="stable")
    fs = fs.select(order)
    info = write_faceset(fs, tmp_path / name, start=plan.start, count=len(plan))
    plan_file = tmp_path / f"{name}_plan.json"
    plan_file.write_text(json.dumps(_plan_rows(plan)))
    assert (
        main(
            [
                "report",
                str(info.path),
                "--plan",
                str(plan_file),
                "--json",
                "--out",
                str(tmp_path / f"{name}_r"),
            ]
        )
        == 0
    )
    return json.loads(capsys.readouterr().out)["quotas"]


def test_forced_rejections_are_regenerated_and_quotas_hold(tmp_path, capsys):
    plan = build_plan(load_spec(None), 0, N, 5)
    sampler = FakeSampler()
    # attempts 0 and 1 of every third identity are rejected (a weak face): regenerated in round 2
    analyzer = _analyzer(sampler, lambda j: j.identity % 3 == 0 and j.attempt < 2)
    res = run_acg(
        plan, sampler, 1, settings=ACGSettings(candidates=1, retries=3, batch_size=4), analyzer=analyzer
    )
    assert res.failed == [] and {res.chosen[s].job.attempt for s in range(0, N, 3)} == {2}
    q = _write_and_report(tmp_path, capsys, plan, res, "ok")
    assert q["missing"] == [] and q["planned_identities"] == q["written_identities"] == N
    fields = {f["field"]: f for f in q["fields"]}
    assert {"gender", "race", "age_bin"} <= set(fields)
    for f in fields.values():
        assert f["max_deviation"] <= 1 and sum(f["written"].values()) == N
        assert f["planned"] == f["written"]  # every identity regenerated: exactly the plan


def test_an_exhausted_bound_is_reported_as_missing(tmp_path, capsys):
    plan = build_plan(load_spec(None), 0, N, 5)
    sampler = FakeSampler()
    analyzer = _analyzer(sampler, lambda j: j.identity == 4)  # never acceptable
    res = run_acg(
        plan, sampler, 1, settings=ACGSettings(candidates=1, retries=1, batch_size=4), analyzer=analyzer
    )
    assert res.failed == [4] and "identity 4: NO ACCEPTABLE CANDIDATE" in res.report()
    q = _write_and_report(tmp_path, capsys, plan, res, "short")
    assert q["missing"] == [4] and q["written_identities"] == N - 1
    for f in q["fields"]:
        assert f["max_deviation"] == 1 and sum(f["written"].values()) == N - 1


def test_report_counts_leaked_images_from_the_manifest(tmp_path):
    from fdta_core.faces.report import load_dataset
    from fdta_core.faceset import Provenance

    imgs = np.zeros((4, 112, 112, 3), np.uint8)
    prov = [Provenance(identity=i // 2, extra={"leaked_images_dropped": 3 if i < 2 else 1}) for i in range(4)]
    info = write_faceset(FaceSet(imgs, np.array([0, 0, 1, 1]), prov), tmp_path / "ds")
    data = load_dataset(info.path)
    assert data.source["leaked_images_dropped"] == 4
    assert any("4 styled image(s) dropped" in n for n in data.notes)
