"""The library side of the frontend extension: the editor's validate/preview answers, the run panel's
event payloads, and the read-only output-folder views with their path checks (no ComfyUI needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from fdta_core.dataset.browse import chunk_info, list_datasets, safe_relative, servable_file
from fdta_core.errors import InputError
from fdta_core.events import CSIM_BINS, chunk_event, csim_event, csim_histogram_counts
from fdta_core.prompts.planner import build_plan
from fdta_core.prompts.spec import default_spec_text, parse_spec
from fdta_core.prompts.studio import MAX_PREVIEW, preview_spec, validate_spec_text


# ------------------------------------------------------------------------------------------ editor
def test_validate_names_the_wrong_entry() -> None:
    spec = json.loads(default_spec_text())
    spec["fields"]["eyes"]["values"][3] = "green (bright)"
    out = validate_spec_text(json.dumps(spec))
    assert out["ok"] is False
    (err,) = out["errors"]
    assert err["where"] == "spec.fields.eyes.values[3]"
    assert "(" in err["message"] and err["fix"]


def test_validate_reports_broken_json_with_its_line() -> None:
    out = validate_spec_text('{"fields": {"gender": ["female",]}}')
    assert out["ok"] is False and out["errors"][0]["where"].startswith("spec line 1")
    assert validate_spec_text(None)["ok"] is False


def test_validate_ok_gives_hash_and_summary() -> None:
    out = validate_spec_text(default_spec_text())
    assert out["ok"] and out["hash"] == parse_spec(default_spec_text()).hash
    assert out["summary"]["hair"]["by"] == "gender" and set(out["summary"]["hair"]["cases"]) == {
        "female",
        "male",
    }
    assert out["summary"]["age"]["bins"][0] == "18-27"


def test_preview_is_the_planner_s_plan() -> None:
    """The preview is exactly what the node plans for that seed and range (same parser, same planner)."""
    text = default_spec_text()
    out = preview_spec(text, seed=7, start=5, count=4)
    assert out["ok"] and [i["index"] for i in out["identities"]] == [5, 6, 7, 8]
    plan = build_plan(parse_spec(text), 5, 4, 7)
    assert [i["prompt"] for i in out["identities"]] == [p.prompt for p in plan]
    assert [i["attributes"] for i in out["identities"]] == [dict(p.attributes) for p in plan]
    assert out["identities"][0]["negative"] == plan.identities[0].negative_prompt


def test_preview_changes_with_proportions() -> None:
    spec = json.loads(default_spec_text())
    spec["fields"]["race"]["values"] = {"White": 0.75, "Black": 0.25}
    out = preview_spec(json.dumps(spec), count=16)
    races = [i["attributes"]["race"] for i in out["identities"]]
    assert races.count("White") == 12 and races.count("Black") == 4  # stratified: exact on 16


@pytest.mark.parametrize("count", [0, MAX_PREVIEW + 1, "x"])
def test_preview_refuses_bad_counts(count) -> None:
    out = preview_spec(default_spec_text(), count=count)
    assert out["ok"] is False and out["errors"][0]["where"] == "preview"


def test_preview_of_an_invalid_spec_returns_the_error() -> None:
    out = preview_spec('{"fields": {"eyez": ["blue"]}}')
    assert out["ok"] is False and "eyez" in out["errors"][0]["where"]


# ------------------------------------------------------------------------------------------ events
class _Stats:
    def __init__(self, csim, reasons, threshold=0.3):
        self.csim = np.asarray(csim, np.float32)
        self.threshold = threshold
        self.reasons = reasons

    def summary(self):
        return {
            "images_in": len(self.csim),
            "images_kept": sum(r == "" for r in self.reasons),
            "rejected_by_csim": sum(r == "csim" for r in self.reasons),
            "rejected_as_leak": sum(r == "leak" for r in self.reasons),
            "dropped_with_identity": sum(r == "identity" for r in self.reasons),
            "identities_in": 2,
            "identities_kept": 1,
            "dropped_identities": [4],
            "csim_mean": float(np.nanmean(self.csim)),
            "csim_std": float(np.nanstd(self.csim)),
        }


def test_csim_histogram_uses_fixed_bins_that_add_up() -> None:
    a = csim_histogram_counts(np.array([0.1, 0.5, 0.55, 2.0, -5.0, np.nan]))
    assert len(a) == CSIM_BINS and sum(a) == 5  # NaN left out, outliers clipped into the end bins
    assert a[0] == 1 and a[-1] == 1
    b = csim_histogram_counts(np.array([0.5]))
    assert [x + y for x, y in zip(a, b, strict=True)] == csim_histogram_counts(
        np.array([0.1, 0.5, 0.55, 2.0, -5.0, 0.5])
    )


def test_csim_event_counts_drops_by_reason() -> None:
    from fdta_core.faces.csim import CSIMStats

    stats = CSIMStats(
        threshold=0.4,
        reference="source",
        min_images_per_identity=0,
        csim=np.array([0.7, 0.1, 0.6, 0.9], np.float32),
        kept_mask=np.array([True, False, False, True]),
        labels=np.array([0, 0, 1, 1]),
        reasons=["", "csim", "leak", ""],
        identities_in=2,
        identities_kept=2,
    )
    ev = csim_event(stats)
    assert ev["images_in"] == 4 and ev["images_kept"] == 2
    assert ev["dropped"] == {"csim": 1, "leak": 1, "identity": 0}
    assert sum(ev["histogram"]["counts"]) == 4 and ev["threshold"] == pytest.approx(0.4)
    json.dumps(ev)  # JSON-able as sent


def test_chunk_event_paths_are_relative_to_the_output_root(tmp_path: Path) -> None:
    class Info:
        name, start, end, images, classes, seconds = "00000000-00000004", 0, 4, 12, 4, 1.5

    ev = chunk_event(tmp_path / "fdta" / "set", Info(), tmp_path)
    assert ev["dataset"] == "fdta/set" and ev["images"] == 12
    assert chunk_event("/elsewhere/set", Info(), tmp_path)["dataset"] == "/elsewhere/set"


# ------------------------------------------------------------------------------------------ browsing
@pytest.fixture
def output(tmp_path: Path) -> Path:
    out = tmp_path / "output"
    (out / "fdta").mkdir(parents=True)
    (tmp_path / "secret.json").write_text("{}")
    return out


@pytest.mark.parametrize(
    "name",
    [
        "../secret.json",
        "fdta/../../secret.json",
        "/etc/passwd",
        "\\etc\\passwd",
        "C:\\x.json",
        "~/x.json",
        "a\x00b",
    ],
)
def test_escapes_are_refused(output: Path, name: str) -> None:
    with pytest.raises(InputError):
        safe_relative(output, name)


def test_symlinks_pointing_out_are_refused(output: Path) -> None:
    (output / "fdta" / "out.json").symlink_to(output.parent / "secret.json")
    (output / "fdta" / "up").symlink_to(output.parent, target_is_directory=True)
    with pytest.raises(InputError, match="outside"):
        servable_file(output, "fdta/out.json")
    with pytest.raises(InputError, match="outside"):
        servable_file(output, "fdta/up/secret.json")
    # a link that stays inside is fine
    (output / "fdta" / "a.json").write_text("{}")
    (output / "fdta" / "b.json").symlink_to(output / "fdta" / "a.json")
    assert servable_file(output, "fdta/b.json")[0] == (output / "fdta" / "a.json").resolve()


def test_only_report_like_files_are_served(output: Path) -> None:
    (output / "fdta" / "train.rec").write_bytes(b"x")
    (output / "fdta" / "r.html").write_text("<p>")
    with pytest.raises(InputError, match="not a report"):
        servable_file(output, "fdta/train.rec")
    assert servable_file(output, "fdta/r.html")[1] == "text/html"
    with pytest.raises(FileNotFoundError):
        servable_file(output, "fdta/missing.html")


def _write_chunk(dataset: Path, start: int, n_ids: int, seed: int = 0):
    from fdta_core.dataset import write_faceset
    from tests.test_dataset_writer import make_faceset

    return write_faceset(make_faceset(start, n_ids, 2, seed=seed), dataset, start=start, count=n_ids)


def test_list_datasets_shows_chunks_status_and_report(output: Path) -> None:
    ds = output / "fdta" / "syn"
    _write_chunk(ds, 0, 3)
    _write_chunk(ds, 3, 2, seed=1)
    sets = list_datasets(output)
    (d,) = sets
    assert d["path"] == "fdta/syn" and d["classes"] == 5 and d["images"] == 10
    assert [c["status"] for c in d["chunks"]] == ["ok", "ok"]
    assert d["report"] is None and "fdta report " in d["report_command"]
    (ds / "report").mkdir()
    (ds / "report" / "report.html").write_text("<html></html>")
    assert list_datasets(output)[0]["report"] == "fdta/syn/report/report.html"
    # a broken chunk is reported as failing rec info
    chunk = ds / "chunks" / d["chunks"][1]["name"]
    rec = chunk / "train.rec"
    rec.write_bytes(rec.read_bytes()[:-10])
    bad = list_datasets(output)[0]["chunks"][1]
    assert bad["status"] == "errors" and bad["errors"]
    info = chunk_info(output, d["chunks"][0]["path"])
    assert info["ok"] and info["path"] == d["chunks"][0]["path"]


def test_merged_sets_are_listed_with_their_report(output: Path) -> None:
    from fdta_core.dataset import merge

    ds = output / "fdta" / "syn"
    _write_chunk(ds, 0, 2)
    merge(output / "fdta" / "syn_merged", [ds])
    (output / "fdta" / "syn_merged" / "report").mkdir()
    (output / "fdta" / "syn_merged" / "report" / "report.html").write_text("<html></html>")
    sets = {d["path"]: d for d in list_datasets(output)}
    m = sets["fdta/syn_merged"]
    assert m["kind"] == "merged" and m["status"] == "ok" and m["classes"] == 2 and m["images"] == 4
    assert m["report"] == "fdta/syn_merged/report/report.html"
    assert sets["fdta/syn"]["kind"] == "chunks" and "fdta rec merge" in sets["fdta/syn"]["report_command"]


def test_listing_never_follows_symlinks_out(output: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "set"
    _write_chunk(outside, 0, 1)
    os.symlink(tmp_path / "elsewhere", output / "link")
    assert list_datasets(output) == []
    with pytest.raises(InputError):
        chunk_info(output, "link/set")
