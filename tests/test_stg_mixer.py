"""Reference bank, style policies, the batched sampler and the mixer on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fdta_core.errors import InputError
from fdta_core.faceset import FaceSet, Provenance
from fdta_core.stg import ReferenceBank, STGSampler, mix, pick_styles
from fdta_core.stg.mixer import CAPTION, OUTPUT_COLOUR, REFERENCE_COLOUR, SOURCE_COLOUR, image_seed
from fdta_core.stg.policies import mpie_axes
from fdta_core.stg.sampler import GenerationRequest
from fdta_core.testing.stg import tiny_model


def _faces(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 112, 112, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def sampler():
    return STGSampler(tiny_model(seed=1), "cpu", "fp32")


def test_bank_from_folder_with_tags_and_alignment(tmp_path):
    root = tmp_path / "refs"
    imgs = _faces(4, 0)
    paths = ["alice/yaw=-30/lighting=3_expression=smile/a.png", "alice/b.png", "bob/c.jpg", "bob/big.png"]
    for p, img in zip(paths, imgs, strict=True):
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        arr = img if "big" not in p else np.zeros((200, 180, 3), np.uint8)
        Image.fromarray(arr).save(root / p, quality=95)
    (tmp_path / "tags.csv").write_text("path,yaw,expression\nalice/b.png,15,neutral\n")
    with pytest.raises(InputError, match="not an aligned 112x112"):
        ReferenceBank.from_folder(root)
    calls = []

    def align(img):
        calls.append(img.shape)
        return np.full((112, 112, 3), 7, np.uint8)

    bank = ReferenceBank.from_folder(root, align=align, tags_csv=tmp_path / "tags.csv")
    assert calls == [(200, 180, 3)]
    assert len(bank) == 4 and bank.subjects == ["alice", "alice", "bob", "bob"]
    assert bank.keys[0] == "folder:alice/b.png"
    assert bank.tags[0] == {"yaw": "15", "expression": "neutral"}
    assert bank.tags[1] == {"yaw": "-30", "lighting": "3", "expression": "smile"}
    assert np.array_equal(bank.images[1], imgs[0])
    limited = ReferenceBank.from_folder(root, align=align, max_subjects=1, max_per_subject=1)
    assert limited.subjects == ["alice"]


def test_bank_from_rec(tmp_path):
    import io

    from fdta_core.recordio import IRHeader, RecordWriter, pack

    imgs = _faces(5, 1)
    labels = [0, 0, 1, 1, 1]
    rec = tmp_path / "train.rec"
    with RecordWriter(rec, tmp_path / "train.idx") as w:
        w.write(0, pack(IRHeader(2, [6.0, 8.0], 0, 0)))
        for k, (img, lab) in enumerate(zip(imgs, labels, strict=True), start=1):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            w.write(k, pack(IRHeader(0, float(lab), k, 0), buf.getvalue()))
        w.write(6, pack(IRHeader(2, [1.0, 3.0], 6, 0)))
        w.write(7, pack(IRHeader(2, [3.0, 6.0], 7, 0)))
    bank = ReferenceBank.from_rec(rec, max_per_subject=2)
    assert bank.subjects == ["0", "0", "1", "1"]
    assert bank.keys == ["rec:train.rec#1", "rec:train.rec#2", "rec:train.rec#3", "rec:train.rec#4"]
    assert np.array_equal(bank.images[2], imgs[2])


def test_policies_are_chunk_independent():
    bank = ReferenceBank.from_images(_faces(12, 2), subjects=[str(i // 3) for i in range(12)])
    whole = pick_styles(bank, range(8), policy="subject", images_per_identity=3, run_seed=5)
    part = pick_styles(bank, range(4, 8), policy="subject", images_per_identity=3, run_seed=5)
    assert whole[12:] == part
    # one subject per identity, distinct subjects inside a block of len(subjects) identities
    subj = [{bank.subjects[p.bank_index] for p in whole if p.identity == i} for i in range(8)]
    assert all(len(s) == 1 for s in subj)
    assert len({next(iter(s)) for s in subj[:4]}) == 4
    rnd = pick_styles(bank, [3], policy="random", images_per_identity=5, run_seed=5)
    assert [p.style_index for p in rnd] == list(range(5))
    assert rnd == pick_styles(bank, [3], policy="random", images_per_identity=5, run_seed=5)
    assert rnd != pick_styles(bank, [3], policy="random", images_per_identity=5, run_seed=6)


def test_grid_policy_mpie():
    tags, n = [], 0
    for _, values in mpie_axes():
        n = max(n, len(values))
    cells = [(y, lt, e) for y in range(-90, 91, 15) for lt in range(7) for e in ("neutral", "smile")]
    assert len(cells) == 182
    for y, lt, e in cells:
        tags.append({"yaw": str(y), "lighting": str(lt), "expression": e})
    images = np.zeros((182, 112, 112, 3), np.uint8)
    bank = ReferenceBank.from_images(images, tags=tags)
    picks = pick_styles(bank, [0, 1], policy="grid", images_per_identity=0, run_seed=0)
    assert len(picks) == 364
    assert all(bank.tags[p.bank_index]["yaw"] == p.cell[0] for p in picks)
    with pytest.raises(InputError, match="grid cells"):
        pick_styles(
            ReferenceBank.from_images(images[:10], tags=tags[:10]),
            [0],
            policy="grid",
            images_per_identity=0,
            run_seed=0,
        )


def _mpie_bank(subjects, missing=()):
    """A tagged bank: every subject has one image per grid cell (except the cells in ``missing``)."""
    cells = [
        (str(y), str(lt), e) for y in range(-90, 91, 15) for lt in range(7) for e in ("neutral", "smile")
    ]
    tags, subs = [], []
    for s in subjects:
        for c in cells:
            if (s, c) in missing:
                continue
            tags.append({"yaw": c[0], "lighting": c[1], "expression": c[2]})
            subs.append(s)
    return ReferenceBank.from_images(
        np.zeros((len(tags), 112, 112, 3), np.uint8), subjects=subs, tags=tags
    ), cells


def test_grid_subject_policy_takes_every_cell_from_one_subject():
    """Syn-MPIE as the paper made it: 182 styles per identity, all from one real reference subject."""
    bank, cells = _mpie_bank(["s0", "s1", "s2"], missing={("s2", ("0", "3", "smile"))})
    picks = pick_styles(bank, range(5), policy="grid_subject", images_per_identity=0, run_seed=4)
    assert len(picks) == 5 * 182
    for ident in range(5):
        mine = [p for p in picks if p.identity == ident]
        assert {bank.subjects[p.bank_index] for p in mine} <= {"s0", "s1"}  # s2 lacks a cell
        assert len({bank.subjects[p.bank_index] for p in mine}) == 1
        assert [p.cell for p in mine] == cells  # every cell once, in grid order
        assert all(
            (
                bank.tags[p.bank_index]["yaw"],
                bank.tags[p.bank_index]["lighting"],
                bank.tags[p.bank_index]["expression"],
            )
            == p.cell
            for p in mine
        )
    # identities of one block get different subjects; a chunk computes its own picks
    assert bank.subjects[picks[0].bank_index] != bank.subjects[picks[182].bank_index]
    assert (
        pick_styles(bank, [3, 4], policy="grid_subject", images_per_identity=0, run_seed=4)
        == picks[3 * 182 :]
    )
    # the old policy (each cell from any subject) stays available
    mixed = pick_styles(bank, range(5), policy="grid", images_per_identity=0, run_seed=4)
    assert any(len({bank.subjects[p.bank_index] for p in mixed if p.identity == i}) > 1 for i in range(5))
    with pytest.raises(InputError, match="no reference subject has an image in every one of the 182"):
        pick_styles(
            _mpie_bank(["s2"], missing={("s2", ("0", "3", "smile"))})[0],
            [0],
            policy="grid_subject",
            images_per_identity=0,
            run_seed=0,
        )


@pytest.mark.parametrize("count", [1, 2, 7, 13, 14, 26, 50, 91, 181, 182, 500])
def test_fewer_images_sample_the_grid_balanced(count):
    from collections import Counter

    bank, cells = _mpie_bank(["s0"])
    for policy in ("grid_subject", "grid"):
        picks = pick_styles(bank, [7, 8], policy=policy, images_per_identity=count, run_seed=1)
        mine = [p.cell for p in picks if p.identity == 7]
        k = min(count, 182)
        assert len(mine) == k and len(set(mine)) == k  # no cell twice
        for axis, size in ((0, 13), (1, 7), (2, 2)):
            seen = Counter(c[axis] for c in mine)
            lo, hi = k // size, -(-k // size)
            assert set(seen.values()) <= {lo, hi} and (len(seen) == size or hi == 1), (axis, seen)
        if count == 26:
            assert Counter(c[0] for c in mine) == {str(y): 2 for y in range(-90, 91, 15)}
        # deterministic in the identity seed; another identity gets other cells
        again = pick_styles(bank, [7], policy=policy, images_per_identity=count, run_seed=1)
        assert [p.cell for p in again] == mine
        other = [p.cell for p in picks if p.identity == 8]
        if 2 <= k < 182:
            assert other != mine


def test_balanced_cells_with_axes_that_share_a_factor():
    from collections import Counter

    from fdta_core.stg.policies import balanced_cells

    axes = [("a", ["0", "1", "2", "3"]), ("b", ["x", "y"])]  # 4 and 2: no CRT, greedy
    got = balanced_cells(axes, 6, 0, 3)
    assert len(set(got)) == 6
    assert set(Counter(c[0] for c in got).values()) <= {1, 2} and set(
        Counter(c[1] for c in got).values()
    ) == {3}
    assert balanced_cells(axes, 0, 0, 3) == [(a, b) for a in "0123" for b in "xy"]


def test_sampler_batching_does_not_change_images(sampler):
    ids = _faces(2, 3)
    styles = _faces(3, 4)
    req = GenerationRequest(ids, np.array([0, 1, 0]), styles, [11, 12, 13])
    seen = []
    batched = sampler.generate(req, steps=2, batch_size=3, progress=lambda d, t: seen.append((d, t)))
    single = sampler.generate(req, steps=2, batch_size=1)
    assert seen[-1] == (6, 6)
    assert np.abs(batched.astype(int) - single.astype(int)).max() <= 1
    other = sampler.generate(GenerationRequest(ids, np.array([0]), styles[2:], [99]), steps=2)
    assert np.abs(other[0].astype(int) - batched[2].astype(int)).mean() > 5  # another seed, another image


def test_progress_exception_propagates(sampler):
    class Stop(Exception):
        pass

    def boom(done, total):
        raise Stop

    req = GenerationRequest(_faces(1, 5), np.array([0]), _faces(1, 6), [1])
    with pytest.raises(Stop):
        sampler.generate(req, steps=2, progress=boom)


def test_mix_provenance_and_sheet(sampler):
    src_imgs = _faces(2, 7)
    source = FaceSet.from_sources(
        src_imgs, [Provenance(identity=10, history=["acg"]), Provenance(identity=11, history=["acg"])]
    )
    bank = ReferenceBank.from_images(_faces(4, 8), subjects=["s0", "s0", "s1", "s1"])
    res = mix(
        sampler, source, bank, policy="subject", images_per_identity=2, run_seed=9, steps=2, batch_size=4
    )
    fs = res.faceset
    assert len(fs) == 4 and fs.labels.tolist() == [10, 10, 11, 11]
    assert set(fs.sources) == {10, 11} and np.array_equal(fs.sources[10], src_imgs[0])
    p = fs.provenance[1]
    assert p.history == ["acg", "stg"]
    assert p.reference_key.startswith("image:") and p.extra["stg_style_index"] == 1
    assert p.seeds["stg"] == image_seed(9, 10, 1)
    assert {
        fs.provenance[0].extra["stg_reference_subject"],
        fs.provenance[1].extra["stg_reference_subject"],
    } == {p.extra["stg_reference_subject"]}
    # 2 identities x (references row + outputs row), source + 2 styles; each tile has a 16 px caption
    assert res.contact_sheet.shape == (4 * (116 + CAPTION) + 4, 3 * 116 + 4, 3)
    # every tile is labelled (issue 12): source, reference and output captions in their own colours;
    # the cell under the source (the outputs row has none there) stays blank
    sheet = res.contact_sheet

    def caption(row: int, col: int) -> np.ndarray:
        y, x = 4 + row * (116 + CAPTION) + 112, 4 + col * 116
        return sheet[y : y + CAPTION, x : x + 112]

    def has(strip: np.ndarray, colour) -> bool:
        return bool((np.abs(strip.astype(int) - colour).sum(-1) < 60).any())

    assert has(caption(0, 0), SOURCE_COLOUR) and not has(caption(0, 0), REFERENCE_COLOUR)
    assert has(caption(0, 1), REFERENCE_COLOUR) and has(caption(0, 2), REFERENCE_COLOUR)
    assert has(caption(1, 1), OUTPUT_COLOUR) and not has(caption(1, 1), REFERENCE_COLOUR)
    assert (caption(1, 0) == 255).all()
    np.testing.assert_array_equal(sheet[4 : 4 + 112, 4 : 4 + 112], src_imgs[0])
    np.testing.assert_array_equal(
        sheet[4 + 116 + CAPTION : 4 + 116 + CAPTION + 112, 4 + 116 : 4 + 116 + 112], fs.images[0]
    )


def test_half_precision_and_channels_last_paths():
    model = tiny_model(seed=1)
    req = GenerationRequest(_faces(1, 10), np.array([0]), _faces(1, 11), [5])
    ref = STGSampler(model, "cpu", "fp32").generate(req, steps=1)
    cl = STGSampler(model, "cpu", "fp32", channels_last=True).generate(req, steps=1)
    assert np.abs(cl.astype(int) - ref.astype(int)).max() <= 1
    bf = STGSampler(model, "cpu", "bf16").generate(req, steps=1)  # autocast; the weights stay fp32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert np.abs(bf.astype(int) - ref.astype(int)).mean() < 8


def test_align_with_face_models_adapter():
    from fdta_core.stg.bank import align_with_face_models

    class FakeResult:
        def __init__(self, faces):
            self.faces = faces

    class FakeModels:
        def __init__(self):
            self.calls = []

        def align_batch(self, images, *, assume_aligned=True):
            self.calls.append((images[0].shape, assume_aligned))
            found = images[0].mean() > 0
            return FakeResult(
                np.full((1, 112, 112, 3), 9, np.uint8) if found else np.zeros((0, 112, 112, 3), np.uint8)
            )

    fm = FakeModels()
    align = align_with_face_models(fm)
    imgs = np.stack([np.full((150, 150, 3), 50, np.uint8), np.zeros((150, 150, 3), np.uint8)])
    bank = ReferenceBank.from_images(imgs, align=align)
    assert len(bank) == 1 and bank.keys == ["image:0"] and fm.calls[0] == ((150, 150, 3), False)
    with pytest.raises(InputError, match="align"):
        align_with_face_models(object())
