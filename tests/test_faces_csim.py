"""CSIM filter, contact sheet, histogram and identity checks, against independent numpy computations."""

from __future__ import annotations

import numpy as np
import pytest

from fdta_core.errors import InputError
from fdta_core.faces.csim import (
    contact_sheet,
    cosine_matrix,
    cosine_similarity,
    csim_filter,
    histogram_image,
)
from fdta_core.faces.identity import (
    IdentityIndex,
    check_threshold,
    greedy_unique,
    identity_violations,
    range_pairs,
)
from fdta_core.faceset import FaceSet, Provenance
from fdta_core.testing.faces import synthetic_identity_faces


def _ref_cos(a, b):
    return float(np.dot(a, b) / (np.sqrt(np.dot(a, a)) * np.sqrt(np.dot(b, b))))


class LinearEmbedder:
    """A deterministic embedding function (random projection of pixels) that counts its calls."""

    def __init__(self, dim=32, seed=0):
        self.w = np.random.default_rng(seed).normal(size=(112 * 112 * 3 // 64, dim))
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        small = x.reshape(len(x), 14, 8, 14, 8, 3).mean(axis=(2, 4)).reshape(len(x), -1) - 127.5
        return small @ self.w


def _faceset(n_id=3, per=4, noise=40.0, seed=0):
    sources, images, labels = synthetic_identity_faces(n_id, per, noise=noise, seed=seed)
    prov = [Provenance(identity=int(lab), history=["stg"]) for lab in labels]
    return FaceSet(images, labels, prov, {i: sources[i] for i in range(n_id)})


def test_cosine_functions_match_reference(rng):
    a, b = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    np.testing.assert_allclose(cosine_similarity(a, b), [_ref_cos(x, y) for x, y in zip(a, b, strict=True)])
    m = cosine_matrix(a, b[:3])
    assert m.shape == (5, 3)
    assert m[2, 1] == pytest.approx(_ref_cos(a[2], b[1]))
    assert cosine_similarity(a[0], a[0]) == pytest.approx(1.0)


def test_filter_source_reference_matches_numpy():
    fs = _faceset()
    emb = LinearEmbedder()
    kept, stats = csim_filter(fs, emb, threshold=0.0, reference="source")
    e_img = emb(fs.images)
    ref = np.array([_ref_cos(e_img[i], emb(fs.sources[int(fs.labels[i])][None])[0]) for i in range(len(fs))])
    np.testing.assert_allclose(stats.csim, ref, atol=1e-9)
    # a threshold between the values splits them exactly
    thr = float(np.median(ref))
    kept, stats = csim_filter(fs, emb, threshold=thr)
    expect = ref >= thr
    np.testing.assert_array_equal(stats.kept_mask, expect)
    assert len(kept) == expect.sum()
    for p, c in zip(kept.provenance, ref[expect], strict=True):
        assert p.csim == pytest.approx(c, abs=1e-6) and p.history == ["stg", "csim"]
        assert p.extra["csim_reference"] == "source" and p.extra["csim_threshold"] == thr
    assert fs.provenance[0].csim is None  # input untouched
    assert set(kept.sources) == set(kept.identities)
    s = stats.summary()
    assert s["images_in"] == 12 and s["images_kept"] == int(expect.sum())
    assert s["rejected_by_csim"] == int((~expect).sum())
    assert s["csim_mean"] == pytest.approx(ref.mean())
    assert sum(s["histogram"]["counts"]) == 12
    assert "kept" in stats.to_text()


def test_filter_mean_reference_matches_numpy():
    fs = _faceset(2, 5)
    emb = LinearEmbedder(seed=3)
    _, stats = csim_filter(fs, emb, threshold=-1.0, reference="mean")
    e = emb(fs.images)
    for ident in (0, 1):
        idx = np.nonzero(fs.labels == ident)[0]
        unit = e[idx] / np.linalg.norm(e[idx], axis=1, keepdims=True)
        centre = unit.mean(axis=0)
        for i in idx:
            assert stats.csim[i] == pytest.approx(_ref_cos(e[i], centre), abs=1e-9)


def test_min_images_drops_whole_identity():
    fs = _faceset(3, 4)
    emb = LinearEmbedder()
    _, base = csim_filter(fs, emb, threshold=0.0)
    # threshold leaving identity 0 with exactly 2 images
    c0 = np.sort(base.csim[fs.labels == 0])[::-1]
    thr = float((c0[1] + c0[2]) / 2)
    kept, stats = csim_filter(fs, emb, threshold=thr, min_images_per_identity=3)
    per = {i: int(((base.csim >= thr) & (fs.labels == i)).sum()) for i in range(3)}
    expect_dropped = sorted(i for i, n in per.items() if n < 3)
    assert 0 in expect_dropped and stats.dropped_identities == expect_dropped
    assert set(kept.identities) == {i for i in range(3) if i not in expect_dropped}
    assert "identity" in stats.reasons


def test_filter_with_face_models_uses_batches(tmp_path):
    from fdta_core.faces import load_face_pack
    from fdta_core.testing.faces import make_tiny_face_pack

    make_tiny_face_pack(tmp_path, "p", genderage=False)
    models = load_face_pack([tmp_path], "p", det_size=256)
    fs = _faceset(2, 3, noise=10)
    kept, stats = csim_filter(fs, models, threshold=0.5, batch_size=4)
    e = models.embed(fs.images)
    src = models.embed(np.stack([fs.sources[0], fs.sources[1]]))
    ref = [_ref_cos(e[i], src[int(fs.labels[i])]) for i in range(len(fs))]
    np.testing.assert_allclose(stats.csim, ref, atol=1e-5)
    assert min(ref) > 0.5 and len(kept) == 6  # small noise keeps identity with the tiny ArcFace


def test_streamed_filter_gives_what_the_whole_set_gives(tmp_path):
    """With face models the filter judges each batch on the helper thread while the model runs the next
    (sources first, then the faces, several batches, two buffers reused); it must decide and record
    exactly what the same filter decides from all embeddings at once: verdicts, reasons, CSIMs, leak
    records, the identity-level drop and the kept images' provenance."""
    from fdta_core.faces import load_face_pack
    from fdta_core.testing.faces import make_tiny_face_pack

    make_tiny_face_pack(tmp_path, "p", genderage=False)
    models = load_face_pack([tmp_path], "p", providers="CPU", require=("recognizer",), threads=1)
    fs = _faceset(7, 5, noise=60, seed=3)  # 35 faces: batches of 8 straddle the sources and the faces
    prov = []
    for i, p in enumerate(fs.provenance):  # most styled after a bank subject, one names an unknown one
        subj = {0: "bob", 1: "alice", 2: "nobody"}.get(i % 4)
        prov.append(
            Provenance(
                identity=p.identity, history=p.history, extra={"stg_reference_subject": subj} if subj else {}
            )
        )
    fs = FaceSet(fs.images, fs.labels, prov, fs.sources)
    subjects = {"alice": models.embed(fs.images[1:2])[0] + 0.5, "bob": models.embed(fs.sources[3][None])[0]}
    whole = lambda x: models.embed(x, batch_size=64)  # noqa: E731 - a plain function: no streaming
    base_csim = csim_filter(fs, whole, threshold=-1.0)[1].csim
    thr = float(np.quantile(base_csim, 0.3))
    runs = [
        csim_filter(fs, m, threshold=thr, min_images_per_identity=3, batch_size=8,
                    reference_subjects=subjects, leak_threshold=0.9)
        for m in (models, whole)
    ]  # fmt: skip
    (k1, s1), (k2, s2) = runs
    np.testing.assert_allclose(s1.csim, s2.csim, atol=1e-5)
    np.testing.assert_allclose(s1.csim_subject, s2.csim_subject, atol=1e-5, equal_nan=True)
    assert np.isnan(s1.csim_subject[2]) and np.isfinite(s1.csim_subject[0])
    assert s1.reasons == s2.reasons and set(s1.reasons) == {"", "csim", "leak", "identity"}
    assert s1.dropped_identities == s2.dropped_identities
    assert np.array_equal(s1.kept_mask, s2.kept_mask) and len(k1) == len(k2) > 0
    for a, b in zip(k1.provenance, k2.provenance, strict=True):
        assert a.history == b.history == ["stg", "csim"] and a.extra.keys() == b.extra.keys()
        assert a.csim == pytest.approx(b.csim, abs=2e-6)
    assert [d.reasons for d in k1.dropped] == [d.reasons for d in k2.dropped]


def test_bad_inputs():
    fs = _faceset(1, 2)
    emb = LinearEmbedder()
    with pytest.raises(InputError, match="reference"):
        csim_filter(fs, emb, reference="median")
    with pytest.raises(InputError, match="threshold"):
        csim_filter(fs, emb, threshold=2.0)
    no_src = FaceSet(fs.images, fs.labels, fs.provenance, {})
    with pytest.raises(InputError, match="no source face"):
        csim_filter(no_src, emb)
    kept, stats = csim_filter(FaceSet.empty(), emb)
    assert len(kept) == 0 and stats.n_in == 0 and "kept 0 / 0" in stats.to_text()


def test_contact_sheet_and_histogram():
    fs = _faceset(3, 4)
    _, first = csim_filter(fs, LinearEmbedder(), threshold=-1.0)
    thr = float(np.median(first.csim))
    _, stats = csim_filter(fs, LinearEmbedder(), threshold=thr)
    sheet = contact_sheet(fs, stats, max_per_identity=4)
    assert sheet.dtype == np.uint8 and sheet.shape[2] == 3
    assert sheet.shape[0] == 4 + 3 * (112 + 18 + 4) and sheet.shape[1] == 4 + 5 * (112 + 4)
    # the source face sits in the first column of its row
    np.testing.assert_array_equal(sheet[4 : 4 + 112, 4 : 4 + 112], fs.sources[0])
    # a rejected tile carries red marks, a kept one is the face itself
    i_rej = int(np.nonzero(~stats.kept_mask)[0][0])
    i_ok = int(np.nonzero(stats.kept_mask)[0][0])
    for i, ok in ((i_rej, False), (i_ok, True)):
        ident = int(fs.labels[i])
        col = int(np.nonzero(fs.by_identity()[ident] == i)[0][0]) + 1
        y, x = 4 + ident * (112 + 18 + 4), 4 + col * (112 + 4)
        tile = sheet[y : y + 112, x : x + 112]
        assert np.array_equal(tile, fs.images[i]) == ok
    img = histogram_image(stats.csim, thr)
    assert img.shape == (240, 480, 3) and (img[..., 0] > 200).any()


def test_greedy_unique_against_numpy(rng):
    base = rng.normal(size=(6, 16))
    emb = np.concatenate([base, base[:2] + rng.normal(0, 0.05, size=(2, 16))])  # 6, 7 repeat 0, 1
    mask = greedy_unique(emb, threshold=0.3)
    kept = []  # independent greedy pass
    for i, e in enumerate(emb):
        if all(_ref_cos(e, emb[j]) < 0.3 for j in kept):
            kept.append(i)
    assert np.nonzero(mask)[0].tolist() == kept and not mask[6] and not mask[7]
    a, b, c, info = range_pairs(emb, None, 0.3)
    ref = [(i, j) for i in range(8) for j in range(i + 1, 8) if _ref_cos(emb[i], emb[j]) >= 0.3]
    assert list(zip(a.tolist(), b.tolist(), strict=True)) == ref and info.method == "exact"
    np.testing.assert_allclose(c, [_ref_cos(emb[i], emb[j]) for i, j in ref], atol=1e-5)


def test_identity_violations_real_then_duplicate(rng):
    real = IdentityIndex()
    real.extend(["subject a", "subject b", "subject c", "subject d"], rng.normal(size=(4, 16)))
    acc = IdentityIndex()
    e = real.vectors()[2] + rng.normal(0, 0.01, 16)
    acc.add("identity 5", e, 5)
    bad = identity_violations(e, accepted=acc, real=real)
    assert [v.code for v in bad] == ["real_person", "duplicate"]
    assert bad[0].label == "subject c" and "real subject c" in bad[0].detail and bad[1].label == "identity 5"
    far = rng.normal(size=16)
    sims = [_ref_cos(far, x) for x in real.vectors()]
    assert bool(identity_violations(far, accepted=None, real=real)) == (max(sims) >= 0.3)
    assert real.most_similar(far)[0] == pytest.approx(max(sims), abs=1e-5)
    with pytest.raises(InputError, match="size"):
        real.most_similar(np.ones(8))
    with pytest.raises(InputError, match="cosine similarity"):
        check_threshold(1.5, "uniqueness_threshold")


def test_filter_identities_drops_repeats_and_real_people(tmp_path):
    from fdta_core.faces.identity import filter_identities

    fs = _faceset(4, 2, noise=5)
    # identity 3 repeats identity 0 (same source face, different label)
    fs.sources[3] = fs.sources[0].copy()
    emb = LinearEmbedder(dim=64)
    acc = IdentityIndex()
    kept, res = filter_identities(fs, emb, accepted=acc)
    e = emb(np.stack([fs.sources[i] for i in range(4)]))
    sims = [[_ref_cos(e[i], e[j]) for j in range(4)] for i in range(4)]
    expect = []
    for i in range(4):
        if all(sims[i][j] < 0.3 for j in expect):
            expect.append(i)
    assert 3 not in expect and kept.identities == expect
    assert not res[3].accepted and res[3].nearest == "identity 0" and res[3].code == "duplicate"
    assert "identity_check" in kept.provenance[0].history
    # the index carries over to the next chunk through a file (FAISS serialisation, atomic)
    acc.save(tmp_path / "seen.faiss")
    again = IdentityIndex.load(tmp_path / "seen.faiss")
    assert len(again) == len(expect) and again.ids == expect
    assert identity_violations(e[0], accepted=again, real=None)[0].label == "identity 0"
    # a real person equal to identity 1 is refused
    real = IdentityIndex()
    real.add("subject 0", e[1])
    kept2, res2 = filter_identities(fs, emb, real=real)
    assert 1 not in kept2.identities and "real subject 0" in res2[1].reason and res2[1].code == "real_person"


def test_leaked_reference_identity_is_dropped_and_recorded():
    """A styled face that looks more like its real reference subject than its source is dropped as a
    leak; kept faces record both CSIMs and the identity's leak count."""
    vec = {
        1: np.array([1.0, 0, 0, 0]),  # source of identity 0
        2: np.array([0.9, 0.3, 0, 0]),  # styled, clearly the source person
        3: np.array([0.3, 0.9, 0, 0]),  # styled, but the reference subject's identity came through
        4: np.array([0.6, 0.5, 0.6, 0]),  # styled: 0.6 to source, 0.5 to subject (< leak threshold 0.55)
        9: np.array([0, 1.0, 0, 0]),  # reference subject "alice"
    }

    def img(code):
        a = np.zeros((112, 112, 3), np.uint8)
        a[0, 0, 0] = code
        return a

    def fn(x):
        return np.stack([vec[int(i[0, 0, 0])] for i in x])

    prov = [Provenance(identity=0, extra={"stg_reference_subject": "alice"}) for _ in range(3)]
    fs = FaceSet(np.stack([img(2), img(3), img(4)]), np.zeros(3, np.int64), prov, {0: img(1)})
    subjects = {"alice": vec[9]}
    kept, stats = csim_filter(fs, fn, threshold=0.3, reference_subjects=subjects, leak_threshold=0.55)
    assert stats.reasons == ["", "leak", ""] and len(kept) == 2
    s = stats.summary()
    assert s["rejected_as_leak"] == 1 and "1 as reference-identity leaks" in stats.to_text()
    e = kept.provenance[0].extra
    assert e["leaked_images_dropped"] == 1
    assert e["csim_to_source"] == pytest.approx(_ref_cos(vec[2], vec[1]), abs=1e-6)
    assert e["csim_to_reference_subject"] == pytest.approx(_ref_cos(vec[2], vec[9]), abs=1e-6)
    # a lower leak threshold also drops the third face (0.5 to its subject)
    _, stats2 = csim_filter(fs, fn, threshold=0.3, reference_subjects=subjects, leak_threshold=0.45)
    assert stats2.reasons == ["", "leak", "leak"]
    # without a bank nothing is checked
    _, stats3 = csim_filter(fs, fn, threshold=0.3)
    assert stats3.reasons == ["", "", ""]


def test_run_index_with_an_empty_chunk(tmp_path):
    """A chunk that accepted nobody still writes its (empty) index; later chunks read past it."""
    from fdta_core.faces.identity import RunIndex

    run = RunIndex(tmp_path / "ids")
    run.save_chunk(0, 2, IdentityIndex())
    one = IdentityIndex()
    one.add("identity 2", np.arange(1, 9, dtype=float), 2)
    run.save_chunk(2, 4, one)
    assert run.prior(2).ids == [] and run.prior(4).ids == [2] and run.prior(3).ids == []
    assert run.all().vectors().shape == (1, 8)
