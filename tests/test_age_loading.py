"""Safe loading of SAM checkpoints in the released format, and ``fdta age convert``."""

from __future__ import annotations

import os
import zipfile

import pytest
import torch

from fdta_core.age.loading import build_model, load_sam, read_checkpoint, save_safetensors
from fdta_core.cli import main as cli_main
from fdta_core.errors import ModelFormatError, UnsafeFileError
from fdta_core.testing.age import TINY_CONFIG, save_sam_checkpoint, tiny_sam


@pytest.fixture(scope="module")
def model():
    return tiny_sam(3)


@pytest.fixture(scope="module")
def probe():
    g = torch.Generator().manual_seed(5)
    return torch.rand(1, 3, 256, 256, generator=g) * 2 - 1


def _run(m, x):
    with torch.no_grad():
        return m.transform(x, [65])


@pytest.fixture(scope="module")
def expected(model, probe):
    return _run(model, probe)


def _same_tensors(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    "kind",
    ["dict_opts", "latent_vector", "cuda_namespace"],
)
def test_released_format_variants_load(tmp_path, model, kind):
    kw = {
        "dict_opts": {},
        "latent_vector": {"latent_avg_vector": True},
        "cuda_namespace": {"cuda_tagged": True, "opts_as_namespace": True},
    }[kind]
    path = save_sam_checkpoint(model, tmp_path / "sam_ffhq_aging.pt", **kw)
    ckpt = read_checkpoint(path)
    assert ckpt.config == TINY_CONFIG
    assert "latent_avg" not in ckpt.state_dict
    assert ckpt.opts["output_size"] == 64 and ckpt.opts["start_from_encoded_w_plus"] is True
    assert "device" not in ckpt.opts and "exp_dir" not in ckpt.opts  # machine-specific values dropped
    loaded = build_model(ckpt)
    if kind == "latent_vector":
        # a [512]-style vector is broadcast over the style slots
        assert torch.equal(loaded.latent_avg, model.latent_avg[0].expand_as(loaded.latent_avg))
        return
    assert _same_tensors(loaded, model)


def test_cuda_saved_file_really_needs_map_location(tmp_path, model):
    if torch.cuda.is_available():
        pytest.skip("the simulation is only observable on a CPU-only machine")
    path = save_sam_checkpoint(model, tmp_path / "c.pt", cuda_tagged=True)
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(path, weights_only=True)
    assert read_checkpoint(path).state_dict["decoder.input.input"].device.type == "cpu"


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > " + os.environ.get("FDTA_EVIL_MARKER", "/nonexistent/x"),))


def test_code_in_pickle_is_refused_not_run(tmp_path, model, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("FDTA_EVIL_MARKER", str(marker))
    sd = {k: v for k, v in model.state_dict().items() if k != "latent_avg"}
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": sd, "opts": _Evil(), "latent_avg": model.latent_avg}, path)
    with pytest.raises(UnsafeFileError):
        read_checkpoint(path)
    assert not marker.exists()


def test_other_globals_refused(tmp_path, model):
    import pathlib

    sd = {k: v for k, v in model.state_dict().items() if k != "latent_avg"}
    path = tmp_path / "odd.pt"
    torch.save({"state_dict": sd, "opts": pathlib.PurePosixPath("/x"), "latent_avg": model.latent_avg}, path)
    with pytest.raises(UnsafeFileError):
        read_checkpoint(path)


def test_wrong_files_give_format_errors(tmp_path, model):
    sd = {k: v for k, v in model.state_dict().items() if k != "latent_avg"}
    p1 = tmp_path / "nolatent.pt"
    torch.save({"state_dict": sd, "opts": {}}, p1)
    with pytest.raises(ModelFormatError, match="latent_avg"):
        read_checkpoint(p1)
    p2 = tmp_path / "notsam.pt"
    torch.save({"state_dict": {"weight": torch.zeros(3)}}, p2)
    with pytest.raises(ModelFormatError, match="SAM"):
        read_checkpoint(p2)
    p3 = tmp_path / "bare.pt"
    torch.save(sd, p3)
    with pytest.raises(ModelFormatError, match="state_dict"):
        read_checkpoint(p3)
    p4 = tmp_path / "truncated.pt"
    p4.write_bytes(save_sam_checkpoint(model, tmp_path / "ok.pt").read_bytes()[:5000])
    with pytest.raises(ModelFormatError):
        read_checkpoint(p4)
    bad = dict(sd)
    bad["encoder.latlayer1.bias"] = torch.zeros(5)
    p5 = tmp_path / "badshape.pt"
    torch.save({"state_dict": bad, "opts": {}, "latent_avg": model.latent_avg}, p5)
    with pytest.raises(ModelFormatError, match="shape"):
        load_sam(p5)
    extra = dict(sd)
    extra["encoder.extra_head.weight"] = torch.zeros(2)
    p6 = tmp_path / "extra.pt"
    torch.save({"state_dict": extra, "opts": {}, "latent_avg": model.latent_avg}, p6)
    with pytest.raises(ModelFormatError, match="unexpected"):
        load_sam(p6)


def test_convert_cli_round_trip(tmp_path, model, probe, expected, capsys):
    src = save_sam_checkpoint(model, tmp_path / "sam_ffhq_aging.pt", cuda_tagged=True, opts_as_namespace=True)
    out = tmp_path / "sam.safetensors"
    assert cli_main(["age", "convert", str(src), str(out), "--json"]) == 0
    assert '"tensors": ' in capsys.readouterr().out
    # The converted file holds no pickle: it is a safetensors file with latent_avg as a key.
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        assert "latent_avg" in f.keys()
        assert f.metadata()["format"].startswith("fdta-sam-age")
    assert not zipfile.is_zipfile(out)
    loaded = load_sam(out)
    torch.testing.assert_close(_run(loaded, probe), expected, atol=0, rtol=0)
    # refuses to overwrite without --force, and refuses a non-safetensors output name
    assert cli_main(["age", "convert", str(src), str(out)]) == 2
    assert cli_main(["age", "convert", str(src), str(out), "--force"]) == 0
    assert cli_main(["age", "convert", str(src), str(tmp_path / "x.pt")]) == 2
    assert cli_main(["age", "info", str(out)]) == 0
    assert '"layout": "ok"' in capsys.readouterr().out


def test_save_safetensors_and_half_precision(tmp_path, model, probe):
    ckpt = read_checkpoint(save_sam_checkpoint(model, tmp_path / "m.pt"))
    out = save_safetensors(ckpt, tmp_path / "m.safetensors")
    half = load_sam(out, dtype=torch.bfloat16)
    assert next(half.parameters()).dtype == torch.bfloat16
    assert half.latent_avg.dtype == torch.bfloat16
