"""Attribute-plan throughput: cold vs warm chunk planning, grammar prompts per second, CLIP counting.

Prints measured figures and ratios from one run. ``--quick`` uses smaller sizes (< 30 s on 2 cores).

    python bench/bench_prompts.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fdta_core.prompts import clip_tokenizer as ct  # noqa: E402
from fdta_core.prompts.planner import assign_attributes, build_plan  # noqa: E402
from fdta_core.prompts.spec import default_spec  # noqa: E402
from fdta_core.prompts.strata import clear_cache  # noqa: E402


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    offset = 20_000 if args.quick else 100_000
    n_plan = 1_000 if args.quick else 10_000
    spec = default_spec()
    tok = ct.get_tokenizer()

    clear_cache()
    cold, _ = timed(lambda: build_plan(spec, offset, 100, 1))
    warm, _ = timed(lambda: build_plan(spec, offset + 100, 100, 1))
    print(
        f"chunk of 100 at identity {offset}: cold {cold:.2f} s, next chunk warm {warm:.3f} s, ratio {cold / warm:.0f}x"
    )

    clear_cache()
    t_assign, _ = timed(lambda: assign_attributes(spec, 0, n_plan, 2))
    clear_cache()
    t_plan, plan = timed(lambda: build_plan(spec, 0, n_plan, 2))
    print(
        f"{n_plan} identities: attributes {n_plan / t_assign:,.0f}/s, attributes+prompts {n_plan / t_plan:,.0f}/s "
        f"(prompt formulation is {(t_plan - t_assign) / t_plan:.0%} of the time)"
    )

    prompts = [i.prompt for i in plan]
    tok._counts.clear()
    t_fast, _ = timed(lambda: [len(tok.tokenize(p)) for p in prompts])
    t_slow, _ = timed(lambda: [len(ct._split_unicode(ct.clean_text(p))) for p in prompts])
    t_re, _ = timed(lambda: [len(ct._split(ct.clean_text(p))) for p in prompts])
    print(
        f"CLIP BPE: {len(prompts) / t_fast:,.0f} prompts/s; pre-tokenising ASCII regex fast path vs unicode scanner: "
        f"{t_re * 1e3:.1f} ms vs {t_slow * 1e3:.1f} ms ({t_slow / t_re:.1f}x)"
    )
    lengths = [len(tok.tokenize(p)) for p in prompts]
    print(
        f"prompt tokens: max {max(lengths)}, mean {sum(lengths) / len(lengths):.1f} (limit {ct.MAX_CONTENT_TOKENS})"
    )


if __name__ == "__main__":
    main()
