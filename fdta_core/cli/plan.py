"""``fdta plan``: the identity plan of a range without ComfyUI (attributes + formulated prompts)."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plan",
        help="attributes and prompts of identities [start, start+count)",
        description="Print the identity plan (stratified attributes, SD 1.5 prompt and negative prompt) of "
        "identities [start, start+count) of a run. The same seed and spec always give the same plan, "
        "however the run is chunked.",
    )
    p.add_argument("--spec", help="attribute spec JSON file (default: the shipped default spec)")
    p.add_argument("--start", type=int, default=0, help="first identity index (default 0)")
    p.add_argument(
        "--count", type=int, default=None, help="number of identities (required unless --default-spec)"
    )
    p.add_argument("--seed", type=int, default=None, help="run seed (required unless --default-spec)")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per identity")
    p.add_argument("--default-spec", action="store_true", help="print the default spec (to edit) and exit")
    llm = p.add_argument_group("LLM descriptions (optional; key from the environment only)")
    llm.add_argument(
        "--llm", action="store_true", help="let an OpenAI-compatible server write the descriptions"
    )
    llm.add_argument("--base-url", default=None, help="OpenAI-compatible base URL (default: OpenAI)")
    llm.add_argument("--model", default="gpt-4o-mini", help="model name (default gpt-4o-mini)")
    llm.add_argument("--temperature", type=float, default=0.7)
    llm.add_argument("--batch-size", type=int, default=8, help="identities per request (default 8)")
    llm.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    llm.add_argument(
        "--max-attempts", type=int, default=5, help="attempts per request before the policy applies"
    )
    llm.add_argument("--concurrency", type=int, default=1, help="requests in flight at once (default 1)")
    llm.add_argument(
        "--on-failure",
        choices=("fallback", "error"),
        default="fallback",
        help="fallback: grammar prompt, recorded as llm-fallback; error: stop",
    )
    llm.add_argument(
        "--cache-dir",
        default=None,
        help="LLM cache folder (default $FDTA_CACHE_DIR/llm or ~/.cache/fdta/llm)",
    )
    llm.add_argument("--no-cache", action="store_true", help="do not read or write the LLM cache")
    llm.add_argument(
        "--api-key-env", default="OPENAI_API_KEY", help="NAME of the environment variable holding the key"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..prompts.planner import build_plan, plan_preview
    from ..prompts.spec import default_spec_text, load_spec

    if args.default_spec:
        sys.stdout.write(default_spec_text())
        return 0
    if args.count is None or args.seed is None:
        raise InputError(
            "--count and --seed are required", where="fdta plan", fix="e.g. fdta plan --count 10 --seed 1"
        )
    spec = load_spec(args.spec)
    plan = build_plan(spec, args.start, args.count, args.seed)
    if args.llm:
        from ..prompts.llm import LLMSettings, describe_plan, resolve_api_key

        settings = LLMSettings(
            model=args.model,
            base_url=args.base_url or None,
            temperature=args.temperature,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            timeout_s=args.timeout,
            max_attempts=args.max_attempts,
            failure_policy=args.on_failure,
            use_cache=not args.no_cache,
            cache_dir=args.cache_dir,
        )
        plan = describe_plan(plan, settings, api_key=resolve_api_key(args.api_key_env))
    if args.json:
        rows = [
            {
                "index": i.index,
                "attributes": i.attributes,
                "prompt": i.prompt,
                "negative_prompt": i.negative_prompt,
                "gender": i.gender,
                "age": i.age,
                "prompt_source": i.prompt_source,
                "extra": i.extra,
            }
            for i in plan
        ]
        json.dump(rows, sys.stdout, indent=1, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        print(plan_preview(plan, limit=plan.count))
    return 0
