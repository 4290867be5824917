"""Shared helpers of the ACG unit tests: tiny plans, a fake sampler and a rule-driven fake analyser."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fdta_core.acg import CandidateJob, FaceAnalysis
from fdta_core.plan import IdentityPlan, IdentitySpec


def make_plan(
    n: int, *, start: int = 0, run_seed: int = 7, genders: Sequence[str] | None = None
) -> IdentityPlan:
    ids = []
    for i in range(n):
        g = genders[i] if genders else ("male" if i % 2 == 0 else "female")
        ids.append(
            IdentitySpec(
                index=start + i,
                attributes={"gender": g, "age": "30"},
                prompt=f"a photo of a {g} person, identity {start + i}",
                negative_prompt="blurry",
                gender=g,
                age=30,
            )
        )
    return IdentityPlan(run_seed=run_seed, start=start, identities=tuple(ids))


class FakeSampler:
    """Returns 32x48 images whose first pixels stamp a serial number; remembers the job of each serial."""

    def __init__(self, h: int = 32, w: int = 48) -> None:
        self.h, self.w = h, w
        self.calls: list[list[CandidateJob]] = []
        self.jobs: dict[int, CandidateJob] = {}

    def __call__(self, jobs: Sequence[CandidateJob]) -> np.ndarray:
        self.calls.append(list(jobs))
        out = np.empty((len(jobs), self.h, self.w, 3), np.uint8)
        for i, job in enumerate(jobs):
            rng = np.random.default_rng(job.seed)
            out[i] = rng.integers(0, 256, (self.h, self.w, 3), dtype=np.uint8)
            serial = len(self.jobs)
            self.jobs[serial] = job
            out[i, 0, 0:4, 0] = np.frombuffer(np.uint32(serial).tobytes(), np.uint8)
        return out

    def job_of(self, image: np.ndarray) -> CandidateJob:
        return self.jobs[int(np.frombuffer(image[0, 0:4, 0].tobytes(), np.uint32)[0])]


def embedding_for(key: int, dim: int = 16) -> np.ndarray:
    """A one-hot vector per key (keys < dim): similarities are exactly 1 (same key) or 0."""
    v = np.zeros(dim)
    v[key % dim] = 1.0
    return v


class RuleAnalyzer:
    """Analysis per job from ``rule(job) -> FaceAnalysis`` (aligned face filled in automatically)."""

    def __init__(self, sampler: FakeSampler, rule: Callable[[CandidateJob], FaceAnalysis]) -> None:
        self.sampler = sampler
        self.rule = rule
        self.calls = 0

    def analyze(self, images: np.ndarray) -> list[FaceAnalysis]:
        self.calls += 1
        out = []
        for img in images:
            a = self.rule(self.sampler.job_of(img))
            if a.detected and a.aligned is None:
                a.aligned = np.full((112, 112, 3), a.det_score * 255, np.uint8)
            out.append(a)
        return out

    def embed_aligned(self, faces: np.ndarray) -> np.ndarray:
        return np.stack([embedding_for(int(f[0, 0, 0])) for f in faces])


def good(
    job: CandidateJob, *, score: float = 0.9, gender: str | None = None, age: float = 31.0
) -> FaceAnalysis:
    """An acceptable analysis with a per-identity embedding (so identities never collide)."""
    g = gender if gender is not None else ("male" if job.identity % 2 == 0 else "female")
    return FaceAnalysis(True, score, embedding=embedding_for(job.identity), gender=g, age=age)
