"""DCFace's intra-class diversity (Eq. 14-15): the metric against a brute-force reading of its definition,
and ``fdta report --style-model --references`` measuring it on a written set against the reference images
each identity was styled after."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fdta_core.cli import main
from fdta_core.dataset.writer import write_faceset
from fdta_core.errors import InputError
from fdta_core.faces.diversity import StyleModel, class_recall, intra_class_diversity, knn_radii
from fdta_core.faceset import FaceSet, Provenance


def _oracle(real, rl, gen, gl, k):
    """The definition, loop by loop: per class, a real vector counts when it lies within the k-th
    nearest-neighbour distance (itself excluded) of some generated vector; classes averaged."""
    recalls = []
    for c in sorted(set(gl)):
        g = [x for x, lab in zip(gen, gl, strict=True) if lab == c]
        r = [x for x, lab in zip(real, rl, strict=True) if lab == c]
        if len(g) <= k or not r:
            continue
        radii = []
        for j, gj in enumerate(g):
            d = sorted(float(np.linalg.norm(gj - o)) for m, o in enumerate(g) if m != j)
            radii.append(d[k - 1])
        hit = [any(np.linalg.norm(ri - gj) <= radii[j] for j, gj in enumerate(g)) for ri in r]
        recalls.append(sum(hit) / len(hit))
    return float(np.mean(recalls)) if recalls else None


def test_diversity_follows_its_definition():
    # one class on a line: generated at 0, 1, 2, 10 -> 1-NN radii 1, 1, 1, 8; real at 0.5 (in), 5 (in:
    # within 8 of 10), 30 (out)
    gen = np.array([[0.0], [1.0], [2.0], [10.0]])
    np.testing.assert_allclose(knn_radii(gen, 1), [1, 1, 1, 8])
    np.testing.assert_allclose(knn_radii(gen, 2), [2, 1, 2, 9])
    assert class_recall(np.array([[0.5], [5.0], [30.0]]), gen, 1) == pytest.approx(2 / 3)
    rng = np.random.default_rng(0)
    gl = np.repeat(np.arange(5), [8, 6, 4, 3, 7])  # class 3 has too few generated images for k=3
    gen = rng.normal(size=(len(gl), 16)) * (1 + gl[:, None])  # wider spread in later classes
    rl = np.concatenate([np.repeat(np.arange(4), 5), [9]])  # class 4 has no real image; 9 no generated
    real = rng.normal(size=(len(rl), 16)) * 2.0
    res = intra_class_diversity(real, rl, gen, gl, k=3)
    assert res.value == pytest.approx(_oracle(real, rl, gen, gl, 3))
    assert sorted(res.per_class) == [0, 1, 2] and res.skipped == {
        3: "fewer than k+1=4 generated images",
        4: "no real images",
    }
    assert 0.0 <= res.value <= 1.0
    # a class whose generated styles spread more covers more of the same real styles
    wide = intra_class_diversity(real[:5], [0] * 5, gen[:8] * 4, [0] * 8, k=3).value
    narrow = intra_class_diversity(real[:5], [0] * 5, gen[:8] * 0.1, [0] * 8, k=3).value
    assert wide >= narrow
    with pytest.raises(InputError, match="k must be >= 1"):
        intra_class_diversity(real, rl, gen, gl, k=0)


def _smooth(rng):
    """A face-sized image of coarse random blocks: global style features differ from image to image
    (white noise would pool to nearly the same features everywhere)."""
    coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((112, 112), Image.BILINEAR))


def _style_onnx(path):
    import torch

    from fdta_core.testing.faces import export_onnx

    class Tiny(torch.nn.Module):
        """A stand-in for Inception-v3 without its classifier: conv, ReLU, global pool -> 8-d."""

        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 8, 5, stride=4)

        def forward(self, x):
            return torch.relu(self.conv(x)).mean(dim=(2, 3))

    return export_onnx(
        Tiny(), path, torch.zeros(1, 3, 64, 64), "x", ["features"], {"x": {0: "n"}, "features": {0: "n"}}
    )


def test_report_measures_diversity_against_the_references_each_identity_was_styled_after(tmp_path, capsys):
    rng = np.random.default_rng(3)
    refs = tmp_path / "refs"
    ref_faces = {}
    for s in range(2):
        for i in range(3):
            face = _smooth(rng)
            (refs / f"subject{s}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(face).save(refs / f"subject{s}" / f"{i}.png")
            ref_faces[f"folder:subject{s}/{i}.png"] = face
    # identity 0 styled after subject0 (5 images close to its references: their styles are covered),
    # identity 1 after subject1 (5 unrelated noise images: not covered), identity 2 has 2 images
    imgs, labels, prov = [], [], []
    for ident, (subject, n) in enumerate([(0, 5), (1, 5), (0, 2)]):
        for k in range(n):
            near = ref_faces[f"folder:subject{subject}/{k % 3}.png"].astype(float) + rng.normal(
                0, 4, (112, 112, 3)
            )
            noise = _smooth(rng)
            imgs.append(np.clip(near if ident == 0 else noise, 0, 255).astype(np.uint8))
            labels.append(ident)
            prov.append(Provenance(identity=ident, reference_key=f"folder:subject{subject}/{k % 3}.png"))
    ds = write_faceset(FaceSet(np.stack(imgs), np.array(labels), prov), tmp_path / "ds").path
    onnx = _style_onnx(tmp_path / "inception_tiny.onnx")
    out = tmp_path / "rep"
    argv = ["report", ds, "--style-model", str(onnx), "--references", str(refs), "--json", "--out", str(out)]
    assert main(argv) == 0
    rep = json.loads(capsys.readouterr().out)
    div = rep["diversity"]
    # the same metric computed here from the same features, references paired by provenance
    from fdta_core.imagecodec import decode_image
    from fdta_core.recordio import RecordReader

    style = StyleModel(onnx)
    with RecordReader(ds) as r:  # the written (JPEG) images, as the report reads them
        written = np.stack([decode_image(r.read_unpacked(k)[1]) for k in range(1, len(imgs) + 1)])
    gen = style(written)
    real_keys = [
        [f"folder:subject0/{k}.png" for k in range(3)],
        [f"folder:subject1/{k}.png" for k in range(3)],
    ]
    real = style(np.stack([ref_faces[k] for keys in real_keys for k in keys]))
    want = _oracle(list(real), [0, 0, 0, 1, 1, 1], list(gen), labels, 3)
    assert div["value"] == pytest.approx(want, abs=1e-5) and div["k"] == 3
    assert 0.0 < div["value"] < 1.0  # identity 0 covers its references' styles, identity 1 does not
    assert div["classes"] == 2 and div["skipped"] == 1  # identity 2: 2 images < k+1
    assert any("diversity: 1 identity left out" in n for n in rep["notes"])
    assert "intra-class diversity (DCFace D_intra" in (out / "report.html").read_text()
    # without the references it says why it was not measured; one of the two alone is refused
    assert main(["report", ds, "--json", "--out", str(out)]) == 0
    assert "needs --style-model" in json.loads(capsys.readouterr().out)["diversity"]["note"]
    assert main(["report", ds, "--style-model", str(onnx), "--out", str(out)]) == 2
    assert "needs both --style-model and --references" in capsys.readouterr().err
