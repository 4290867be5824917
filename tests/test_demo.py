"""``fdta demo`` pieces that need no ComfyUI: the verification pairs, the requirements check, the
ComfyUI lookup and installer's failure messages, and the choice between real and tiny models.
(The whole demo runs live in tests/comfy/test_demo_live.py.)"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from fdta_core import demo
from fdta_core.comfy_server import ComfyServer
from fdta_core.eval.verification import fold_slices, load_bin_raw

REPO = Path(__file__).resolve().parents[1]


def test_pairs_bin_is_a_benchmark_file_whose_folds_hold_both_kinds(tmp_path) -> None:
    pytest.importorskip("cv2")
    from fdta_core.testing.train import write_synthetic_rec

    ds = write_synthetic_rec(tmp_path / "ds", num_classes=4, per_class=3, seed=2)
    path = demo.write_pairs_bin(ds, tmp_path / "pairs.bin", pairs=60, seed=1)
    images, issame = load_bin_raw(path)
    assert len(images) == 120 and len(issame) == 60 and 0 < issame.sum() < 60
    for sl in fold_slices(60):
        fold = issame[sl]
        assert fold.any() and not fold.all()
    assert all(img[:2] == b"\xff\xd8" for img in images)  # the data set's own JPEGs
    # deterministic in the seed
    again = demo.write_pairs_bin(ds, tmp_path / "again.bin", pairs=60, seed=1)
    assert again.read_bytes() == path.read_bytes()


def test_pairs_bin_refuses_a_set_without_same_identity_pairs(tmp_path) -> None:
    pytest.importorskip("cv2")
    from fdta_core.testing.train import write_synthetic_rec

    ds = write_synthetic_rec(tmp_path / "ds", num_classes=3, per_class=1, seed=2)
    with pytest.raises(demo.DemoError, match="too few"):
        demo.write_pairs_bin(ds, tmp_path / "p.bin", pairs=20, seed=1)


def test_requirements_check_honours_versions_markers_and_the_onnxruntime_alias(tmp_path) -> None:
    req = tmp_path / "requirements.txt"
    has_ort = True
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        has_ort = False
    req.write_text(
        "# comment\nnumpy>=1.0\nnumpy>=999\nfdta-surely-not-a-package>=1\n"
        'pillow>=1; sys_platform == "no-such-platform"\nfdta-other-missing; sys_platform == "no-such-platform"\n'
        "onnxruntime-gpu>=1.0\n"
    )
    missing = demo.missing_requirements(Path(sys.executable), req)
    assert "numpy>=999" in missing and "fdta-surely-not-a-package>=1" in missing
    assert "numpy>=1.0" not in missing and not any("no-such-platform" in m for m in missing)
    assert ("onnxruntime-gpu>=1.0" in missing) == (not has_ort)  # either build satisfies the other's line


def test_comfyui_version_and_lookup_messages(tmp_path, monkeypatch) -> None:
    (tmp_path / "comfyui_version.py").write_text('# generated\n__version__ = "0.3.64"\n')
    assert demo.comfyui_version(tmp_path) == (0, 3, 64)
    assert demo.comfyui_version(tmp_path / "nope") is None
    monkeypatch.delenv("COMFYUI_DIR", raising=False)
    monkeypatch.delenv("COMFYUI_PYTHON", raising=False)
    cfg = demo.DemoConfig(workdir=tmp_path / "w", install_comfyui=False)
    with pytest.raises(demo.DemoError, match="COMFYUI_DIR is not set"):
        demo.resolve_comfyui(cfg, print)
    # a checkout without its Python
    (tmp_path / "main.py").write_text("")
    cfg = demo.DemoConfig(workdir=tmp_path / "w", comfyui_dir=tmp_path)
    with pytest.raises(demo.DemoError, match="COMFYUI_PYTHON"):
        demo.resolve_comfyui(cfg, print)
    # too old
    (tmp_path / "comfyui_version.py").write_text('__version__ = "0.3.40"\n')
    cfg = demo.DemoConfig(workdir=tmp_path / "w", comfyui_dir=tmp_path, comfyui_python=Path(sys.executable))
    with pytest.raises(demo.DemoError, match="too old"):
        demo.resolve_comfyui(cfg, print)


def test_installer_without_git_says_what_to_do(tmp_path, monkeypatch) -> None:
    """The installer path (git clone + venv) cannot reach GitHub here; its failure must be clear."""
    monkeypatch.setattr(demo.shutil, "which", lambda name: None)
    with pytest.raises(demo.DemoError) as exc:
        demo.install_comfyui(tmp_path / "w", lambda m: None)
    assert "git is not available" in str(exc.value) and "COMFYUI_DIR" in str(exc.value)


def test_installer_reports_the_failing_command(tmp_path, monkeypatch) -> None:
    """A clone that fails (no network) names the command and the way out."""
    fake_git = tmp_path / "bin" / "git"
    fake_git.parent.mkdir()
    fake_git.write_text("#!/bin/sh\necho 'fatal: unable to access' >&2\nexit 128\n")
    fake_git.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_git.parent}:/usr/bin:/bin")
    with pytest.raises(demo.DemoError) as exc:
        demo.install_comfyui(tmp_path / "w", lambda m: None)
    msg = str(exc.value)
    assert (
        "cloning ComfyUI" in msg and "exit status 128" in msg and "git clone" in msg and "COMFYUI_DIR" in msg
    )


def test_real_models_are_used_when_present_and_keep_every_check_on(tmp_path) -> None:
    import json

    models = tmp_path / "models"
    for rel in ("checkpoints/v1-5-pruned-emaonly.safetensors", "controlnet/control_v11p_sd15_canny.pth",
                "insightface/models/buffalo_l/det_10g.onnx", "insightface/models/buffalo_l/w600k_r50.onnx",
                "fdta/stg/dcface_5x5.ckpt", "fdta/age/sam_ffhq_aging.pt"):  # fmt: skip
        (models / rel).parent.mkdir(parents=True, exist_ok=True)
        (models / rel).write_bytes(b"x")
    wf = json.loads((REPO / "workflows" / "api" / "syn_ms1m.json").read_text())
    server = ComfyServer(tmp_path, Path(sys.executable), tmp_path / "base", pack=REPO)
    cfg = demo.DemoConfig(models_dir=models)
    out = demo.prepare_models(cfg, server, wf, lambda m: None)
    assert (
        not out.tiny
        and out.face_checks
        and set(out.real) == {"sd15", "controlnet", "insightface", "stg", "age"}
    )
    assert out.pack == "buffalo_l" and out.insightface_dir == models / "insightface"
    assert not any("threshold" in s or "ckpt_name" in s or "FDTASTGLoader" in s for s in out.sets)
    assert not any(server.models.rglob("*.safetensors"))  # nothing tiny was written
    # the server sees the real folders through extra_model_paths.yaml
    from fdta_core.models_catalog import ModelFolders, parse_extra_model_paths

    yaml = demo.write_extra_model_paths(tmp_path / "extra.yaml", ModelFolders(models))
    parsed = parse_extra_model_paths(yaml)
    assert parsed["checkpoints"] == [models / "checkpoints"] and parsed["fdta_stg"] == [
        models / "fdta" / "stg"
    ]
    assert "loras" not in parsed  # folders that do not exist are not registered
    assert np.all([p.is_absolute() for ps in parsed.values() for p in ps])


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the lost interrupt itself
def test_a_lost_ctrl_c_still_stops_the_demo_at_the_next_step(monkeypatch) -> None:
    """Python drops an exception raised inside a ``__del__``; a Ctrl-C whose KeyboardInterrupt was lost
    that way is remembered by the handler and stops the demo before and after the next command."""
    import fdta_core.cli as cli

    ran: list[list[str]] = []

    def fake_main(argv):
        ran.append(argv)
        return 0

    monkeypatch.setattr(cli, "main", fake_main)
    demo.INTERRUPTED.clear()
    demo._cli(["rec", "info", "x"], "a step")
    assert ran == [["rec", "info", "x"]]

    class Swallows:
        def __del__(self):
            demo.INTERRUPTED.set()  # what the signal handler does first
            raise KeyboardInterrupt  # ...and this is dropped by Python ("Exception ignored in")

    Swallows()  # collected at once: the interrupt is lost, the flag is not
    with pytest.raises(KeyboardInterrupt):
        demo._cli(["rec", "info", "y"], "the next step")
    assert ran == [["rec", "info", "x"]]

    def interrupted_during(argv):
        demo.INTERRUPTED.set()
        return 0  # the command finished anyway: its KeyboardInterrupt was lost

    monkeypatch.setattr(cli, "main", interrupted_during)
    demo.INTERRUPTED.clear()
    with pytest.raises(KeyboardInterrupt):
        demo._cli(["run"], "the run")
    demo.INTERRUPTED.clear()
