"""Candidate selection rules, on synthetic face analyses."""

from __future__ import annotations

import numpy as np
import pytest

from fdta_core.acg import FaceAnalysis, IdentityIndex, SelectionCriteria, check_candidate, choose
from fdta_core.errors import InputError

FACE = np.zeros((112, 112, 3), np.uint8)


def ana(score=0.9, gender="male", age=30.0, emb=(1, 0, 0), detected=True, aligned=True):
    return FaceAnalysis(
        detected, score, aligned=FACE if aligned else None, embedding=None if emb is None else np.array(emb, float),
        gender=gender, age=age,
    )  # fmt: skip


def codes(rej):
    return [r.code for r in rej]


def check(a, gender="male", age=30, crit=SelectionCriteria(), accepted=None, real=None):
    return codes(
        check_candidate(
            a,
            gender=gender,
            age=age,
            criteria=crit,
            accepted=accepted or IdentityIndex(),
            real=real or IdentityIndex(),
        )
    )


def test_acceptable_candidate_has_no_reasons():
    assert check(ana()) == []


def test_no_face_is_the_only_reason_when_nothing_detected():
    assert check(ana(detected=False, aligned=False, emb=None)) == ["no_face"]


def test_detection_score_alignment_gender_age():
    assert check(ana(score=0.2)) == ["low_score"]
    assert check(ana(aligned=False)) == ["not_aligned"]
    assert check(ana(gender="female")) == ["gender"]
    assert check(ana(age=45)) == ["age"]
    assert check(ana(age=40)) == []  # exactly at the tolerance (10) is accepted
    assert check(ana(gender="female", age=60)) == ["gender", "age"]


def test_checks_are_skipped_when_disabled_or_unknown():
    assert check(ana(gender="female"), crit=SelectionCriteria(check_gender=False)) == []
    assert check(ana(age=80), crit=SelectionCriteria(age_tolerance=None)) == []
    assert check(ana(gender=None, age=None)) == []  # no gender/age model: nothing to compare
    assert check(ana(gender="female"), gender=None) == []  # plan without a gender target


def test_uniqueness_and_real_person_thresholds():
    accepted = IdentityIndex()
    accepted.add("identity 3", np.array([1.0, 0.0, 0.0]))
    real = IdentityIndex()
    real.add("control photo 0", np.array([0.0, 1.0, 0.0]))
    # cosine 0.6 to identity 3 -> duplicate
    assert check(ana(emb=(0.6, 0.0, 0.8)), accepted=accepted, real=real) == ["duplicate"]
    # cosine 0.29 to the real face -> fine, 0.31 -> rejected
    c = 0.29
    assert check(ana(emb=(0.0, c, np.sqrt(1 - c * c))), accepted=accepted, real=real) == []
    c = 0.31
    assert check(ana(emb=(0.0, c, np.sqrt(1 - c * c))), accepted=accepted, real=real) == ["real_person"]
    # the threshold is configurable
    loose = SelectionCriteria(uniqueness_threshold=0.7)
    assert check(ana(emb=(0.6, 0.0, 0.8)), accepted=accepted, crit=loose) == []


def test_missing_embedding_cannot_pass_identity_checks_once_banks_are_filled():
    accepted = IdentityIndex()
    accepted.add("identity 0", np.array([1.0, 0.0]))
    assert check(ana(emb=None), accepted=accepted) == ["no_embedding"]
    assert check(ana(emb=None)) == []


def test_choose_prefers_detection_score_then_age_then_order():
    cands = [ana(score=0.7), ana(score=0.9, age=38), ana(score=0.9, age=31), ana(score=0.95, gender="female")]
    best, reasons = choose(
        cands,
        gender="male",
        age=30,
        criteria=SelectionCriteria(),
        accepted=IdentityIndex(),
        real=IdentityIndex(),
    )
    assert best == 2  # 3 is the best detection but the wrong gender; 1 and 2 tie on score, 2 is closer in age
    assert reasons[2] == []
    assert codes(reasons[3]) == ["gender"]
    assert codes(reasons[0]) == codes(reasons[1]) == ["not_chosen"]
    # exact tie: the earlier candidate wins
    best, _ = choose(
        [ana(), ana()],
        gender="male",
        age=30,
        criteria=SelectionCriteria(),
        accepted=IdentityIndex(),
        real=IdentityIndex(),
    )
    assert best == 0


def test_choose_returns_none_when_nothing_is_acceptable():
    best, reasons = choose(
        [ana(detected=False, aligned=False, emb=None), ana(gender="female")],
        gender="male", age=30, criteria=SelectionCriteria(), accepted=IdentityIndex(), real=IdentityIndex(),
    )  # fmt: skip
    assert best is None
    assert [codes(r) for r in reasons] == [["no_face"], ["gender"]]


def test_bank_rejects_bad_embeddings_and_mismatched_sizes():
    bank = IdentityIndex()
    with pytest.raises(InputError):
        bank.add("x", np.zeros(4))
    bank.add("a", np.ones(4))
    with pytest.raises(InputError):
        bank.most_similar(np.ones(3))
    sim, lab = bank.most_similar(np.ones(4) * 3)
    assert lab == "a" and sim == pytest.approx(1.0)
    assert IdentityIndex().most_similar(np.ones(4))[1] is None


def test_criteria_validate():
    with pytest.raises(InputError):
        SelectionCriteria(uniqueness_threshold=1.5)
    with pytest.raises(InputError):
        SelectionCriteria(age_tolerance=-1)
