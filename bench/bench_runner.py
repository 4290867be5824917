"""``fdta run`` vs the same prompts queued by hand to the same ComfyUI server, in one run.

The runner adds per chunk: patching the workflow, the run manifest (an atomic write per state change),
waiting for one prompt before queueing the next (the server idles between prompts) and, once per run,
checking ``--set`` against ``/object_info``. Queued by hand, every prompt of the run goes into the
server's queue at once and the server never waits. The ratio of the two throughputs (identities per
second, same workflow, same chunks, same overrides; fresh run seeds per repeat so ComfyUI's cache
serves only the model loaders, warmed up first) is ``fraction of hand-queued throughput: F``; target
>= 0.95. Repeated side by side until the spread is under 10% (or a time cap).

Needs a ComfyUI checkout (``COMFYUI_DIR``, ``COMFYUI_PYTHON`` as for the live tests); the models are the
tiny random-weight ones of ``fdta demo`` (written once into a scratch base folder), the workflow the
shipped Syn-MS1M graph with the demo's tiny settings. The last runner repeat's per-stage table is printed
too.

    python bench/bench_runner.py [--quick] [--identities 6] [--chunk-size 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._steady import load_average, pin_threads, steady_ratio  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 identities in 2 chunks, a 240 s cap")
    ap.add_argument("--identities", type=int, default=None, help="identities per repeat (default 8)")
    ap.add_argument("--chunk-size", type=int, default=2)
    ap.add_argument("--cap", type=float, default=None, help="seconds to repeat the comparison")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temp folder)")
    args = ap.parse_args(argv)
    pin_threads(None)
    from fdta_core.comfy_server import ComfyServer, comfy_checkout, pack_root
    from fdta_core.demo import DemoConfig, prepare_models, write_references
    from fdta_core.runner import RunConfig, patch_workflow, plan_chunks, run
    from fdta_core.runner.client import ComfyClient
    from fdta_core.runner.patch import parse_override
    from fdta_core.runner.stages import format_run_stages, run_stage_summary

    root, python, reason = comfy_checkout()
    if root is None or python is None:
        print(f"bench_runner needs a live ComfyUI: {reason} (set COMFYUI_DIR and COMFYUI_PYTHON)")
        return 2
    n = args.identities or (4 if args.quick else 8)
    chunk = max(1, args.chunk_size)
    cap = args.cap or (240 if args.quick else 900)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="fdta-bench-runner-"))
    pack = pack_root()
    workflow = json.loads((pack / "workflows" / "api" / "syn_ms1m.json").read_text())
    server = ComfyServer(root, python, work / "comfy", pack=pack, cpu=True)
    server.prepare()
    models = prepare_models(DemoConfig(workdir=work, images_per_identity=2), server, workflow, print)
    del workflow["7"]["inputs"]["face_models"]  # tiny models draw no detectable face (as fdta demo)
    workflow["7"]["inputs"].pop("reference_bank", None)
    for node in workflow.values():
        if node.get("class_type") == "FDTACSIMFilter":
            node["inputs"].pop("reference_bank", None)
    write_references(server.input_dir, 1)
    shutil.copy2(
        pack / "workflows" / "inputs" / "fdta_face_edges.png", server.input_dir / "fdta_face_edges.png"
    )
    sets = [s for s in models.sets if not s.startswith("FDTADatasetWriter.output_name=")]
    chunks = plan_chunks(n, chunk)
    rep = [0]

    def config(k: int) -> RunConfig:
        over = [parse_override(s) for s in [*sets, f"FDTADatasetWriter.output_name=fdta/bench_runner_{k}"]]
        return RunConfig(workflow=workflow, run_dir=work / f"run{k}", identities=n, chunk_size=chunk,
                         seed=1000 + k, servers=[server.url], overrides=over, identity_index="")  # fmt: skip

    def runner_rate() -> float:
        rep[0] += 1
        cfg = config(rep[0])
        t = time.perf_counter()
        counts = run(cfg, on_progress=lambda _name, _msg: None)
        dt = time.perf_counter() - t
        if counts["done"] != len(chunks):
            raise SystemExit(f"fdta run failed: {counts}\n{server.log_tail(40)}")
        last[0] = cfg
        return n / dt

    def hand_rate() -> float:
        rep[0] += 1
        cfg = config(rep[0])
        cfg.check_overrides(info)  # the same coerced values the runner queues
        prompts = [
            patch_workflow(cfg.workflow, c, cfg.seed, cfg.overrides, identity_index="") for c in chunks
        ]
        client = ComfyClient(server.url)
        t = time.perf_counter()
        pids = [client.queue(p) for p in prompts]
        for pid in pids:
            client.wait(pid, on_progress=lambda _msg: None)
        return n / (time.perf_counter() - t)

    last: list = [None]
    print(
        f"ComfyUI at {server.url} (base {work / 'comfy'}); {n} identities in {len(chunks)} chunk(s) per repeat"
    )
    try:
        server.start()
        info = ComfyClient(server.url).object_info()
        runner_rate()  # warm-up: model loading, first-prompt costs
        st = steady_ratio(runner_rate, hand_rate, cap_s=cap, max_repeats=8)
    finally:
        server.stop()
    print(
        f"identities/s: fdta run {st.num_median:.3f}, queued by hand {st.den_median:.3f} "
        f"(medians of the last repeats; {len(chunks)} prompts each)"
    )
    print(format_run_stages(run_stage_summary(last[0].manifest_path())))
    print(f"{st.line()}; load average {load_average():.1f}")
    print(f"fraction of hand-queued throughput: {st.ratio:.2f}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
