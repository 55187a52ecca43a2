"""AugCon's figures: the ROUGE-L query filter and the query scorer's training (CPU, no engine),
and the Context-Split-Tree grown through the LLM resource vs raw `vllm.LLM.chat` on the same
prompts (in-process engine).

augcon_rouge_filter_seconds_per_100k: `query_filter.filter_queries` per root chunk, as
augcon/filtered_questions calls it, over synthetic questions (a fifth in Chinese, about a
quarter of them light rewrites of another question of their chunk, so ROUGE-L drops some).
augcon_scorer_train_seconds_per_1k: `scorer.train_scorer` for one epoch on synthetic triplets,
its own optimisation-loop seconds (`TrainingRecord.train_seconds`) per 1,000 training triplets.
augcon_cst_overhead_ratio: `context_tree.grow_trees` on the engine resource / the same levels'
prompts (`split_request`) sent to raw `LLM.chat`, level by level, same sampling and seeds.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.core import Context, Result, ratios, timed
from condor_dagster.core.llm import Completion, LLMRequest, SamplingParams, derive_seed
from condor_dagster.methods.augcon.query_filter import filter_queries, generation_target, quota

if TYPE_CHECKING:
    from condor_dagster.methods.augcon.scorer import Degradation, Triplet

QUERIES_PER_CHUNK = 20  # what a chunk's trees yield: its target (~17 at 500 chars) and a few
CHINESE_SHARE = 0.2
NEAR_DUPLICATE_SHARE = 0.25
PER_QUERIES = 100_000
PER_TRIPLETS = 1_000


@dataclass(frozen=True)
class AugconSizes:
    """This module's problem sizes (bench.core.Sizes holds the other groups')."""

    filter_queries: int = 100_000
    scorer_triplets: int = 500
    tree_chunks: int = 64
    tree_max_tokens: int = 128

    @classmethod
    def of(cls, ctx: Context) -> AugconSizes:
        if ctx.quick:
            return cls(filter_queries=5_000, scorer_triplets=64, tree_chunks=8, tree_max_tokens=32)
        return cls()


# ---- synthetic questions, per root chunk -------------------------------------------------------
_EN_SUBJECTS = [
    "the Debian installer",
    "APT pinning",
    "the systemd journal",
    "ZFS snapshots",
    "the Linux page cache",
    "TLS certificate renewal",
    "PostgreSQL autovacuum",
    "interactive Git rebasing",
    "the Rust borrow checker",
    "HTTP/2 multiplexing",
    "cron job scheduling",
    "SSH key rotation",
    "Python virtual environments",
    "the kernel's OOM killer",
    "local DNS caching",
    "a RAID 5 rebuild",
    "the Debian security team",
    "unattended upgrades",
    "the ext4 journal",
    "container image layers",
]
_EN_ASPECTS = [
    "default configuration",
    "main limitation",
    "first release",
    "performance cost",
    "security model",
    "log output",
    "upgrade path",
    "most common failure",
    "memory footprint",
    "command line options",
    "recommended settings",
    "design history",
    "error messages",
    "licensing terms",
]
# Questions about different parts of one chunk share its subject and little else: the slots
# vary the rest (a part, an action, a number, a year, a role).
_EN_TEMPLATES = [
    "What is the {aspect} of {subject}?",
    "How does {subject} behave when {action} fails halfway?",
    "Why do administrators keep {part} of {subject} under version control?",
    "When did {subject} change its {aspect}, and what prompted it?",
    "Which file controls {part} on a default installation?",
    "What goes wrong if nobody reviews {part} for {n} months?",
    "How can you check from a shell that {action} finished?",
    "What problem was the {year} redesign trying to solve?",
    "Who is expected to approve {action} on a shared server?",
    "In what way does {subject} differ from {other}?",
    "Is there an official page that documents {part}?",
    "According to {who}, what limits {subject} most?",
    "Can a beginner safely try {action} without breaking anything?",
    "What should you check first after an upgrade to version {n}?",
    "How long does {action} take on a machine with {n} GB of memory?",
    "Where do the numbers in the {year} report come from?",
    "Which command prints {part}?",
    "What did {who} recommend after the {year} incident?",
    "Does {action} need root privileges?",
    "How many retries does {subject} attempt before giving up?",
    "What is stored in {part}, and who can read it?",
    "Why was {part} moved in {year}?",
    "What happens to running services during {action}?",
    "How do {who} test {subject} before a release?",
]
_EN_PARTS = [
    "the configuration file",
    "the cache directory",
    "the default timeout",
    "the release notes",
    "the lock file",
    "the status page",
    "the error log",
    "the list of mirrors",
]
_EN_ACTIONS = [
    "reinstalling the package",
    "rotating the logs",
    "rebooting the host",
    "restoring a backup",
    "renaming the network interface",
    "clearing the cache",
    "replacing a disk",
]
_EN_WHO = ["the maintainers", "the release team", "the security team", "the upstream authors"]
_EN_REWRITES = [
    lambda q: "According to the passage, " + q[0].lower() + q[1:],
    lambda q: q.replace("What ", "What exactly ", 1) if q.startswith("What ") else q + " Why?",
    lambda q: q.replace("administrators", "system administrators").replace(" the ", " its ", 1),
    lambda q: q.rstrip("?") + " in practice?",
    lambda q: q.replace("How can you", "How do you").replace("Which", "What"),
]
_ZH_SUBJECTS = [
    "太阳能电池",
    "城市地铁系统",
    "丝绸之路贸易",
    "量子计算机",
    "长江流域治理",
    "中医针灸",
    "人工智能芯片",
    "古代科举制度",
    "新能源汽车电池",
    "高速铁路网络",
]
_ZH_ASPECTS = [
    "发展历史",
    "主要缺点",
    "工作原理",
    "维护成本",
    "安全问题",
    "最新进展",
    "适用范围",
    "核心技术",
    "社会影响",
    "环境代价",
]
_ZH_TEMPLATES = [
    "{subject}的{aspect}是什么？",
    "为什么人们越来越关心{part}？",
    "{year}年以后{subject}有哪些变化？",
    "如何客观地评估{action}的效果？",
    "{subject}和{other}相比有什么不同？",
    "文中是怎样描述{part}的？",
    "哪些因素会影响{action}的进度？",
    "{action}对普通人的生活有什么影响？",
    "{who}认为目前最大的挑战是什么？",
    "政府在{year}年采取了哪些措施？",
    "{subject}最早是在什么时候出现的？",
    "如果忽视{part}，可能会带来什么后果？",
    "{action}一般需要多少年？",
    "{who}为什么反对{action}？",
    "{part}由谁负责管理？",
    "第{n}阶段的目标有没有实现？",
]
_ZH_PARTS = ["建设成本", "技术标准", "人才培养", "国际合作", "安全监管", "用户反馈"]
_ZH_ACTIONS = ["扩大生产规模", "更新设备", "制定行业标准", "推广试点项目", "降低能耗"]
_ZH_WHO = ["专家", "地方政府", "研究人员", "企业负责人"]
_ZH_REWRITES = [
    lambda q: "根据文章，" + q,
    lambda q: q.replace("是什么", "到底是什么", 1) if "是什么" in q else q.replace("？", "呢？"),
    lambda q: q.replace("哪些", "什么样的", 1),
    lambda q: q.rstrip("？") + "，请简单说明？",
]


@dataclass(frozen=True)
class FilterChunk:
    queries: list[str]
    scores: list[float]
    quota: int
    language: str


def filter_chunks(n_queries: int, *, seed: int = 0) -> list[FilterChunk]:
    """`n_queries` questions in root chunks of QUERIES_PER_CHUNK: a chunk is about one subject,
    its questions are different templates with their slots filled at random, and about a
    quarter are light rewrites of an earlier question of the chunk (a prefix, an inserted word,
    a synonym), the near-duplicates a model writes across a chunk's trees. Chunk lengths of
    430-570 characters give quotas of 12-16."""
    rng = random.Random(seed)
    chunks = []
    made = 0
    while made < n_queries:
        size = min(QUERIES_PER_CHUNK, n_queries - made)
        chinese = rng.random() < CHINESE_SHARE
        if chinese:
            subjects, aspects, parts, actions, who = (
                _ZH_SUBJECTS,
                _ZH_ASPECTS,
                _ZH_PARTS,
                _ZH_ACTIONS,
                _ZH_WHO,
            )
            templates, rewrites = _ZH_TEMPLATES, _ZH_REWRITES
        else:
            subjects, aspects, parts, actions, who = (
                _EN_SUBJECTS,
                _EN_ASPECTS,
                _EN_PARTS,
                _EN_ACTIONS,
                _EN_WHO,
            )
            templates, rewrites = _EN_TEMPLATES, _EN_REWRITES
        subject, other = rng.sample(subjects, 2)
        # Each template once per chunk (then again, once all are used).
        order = rng.sample(templates, len(templates)) * (size // len(templates) + 1)
        fresh = iter(order)
        queries: list[str] = []
        for _ in range(size):
            if queries and rng.random() < NEAR_DUPLICATE_SHARE:
                source = rng.choice(queries)
                rewritten = rng.choice(rewrites)(source)
                queries.append(rewritten if rewritten != source else rewrites[0](source))
            else:
                queries.append(
                    next(fresh).format(
                        subject=subject,
                        other=other,
                        aspect=rng.choice(aspects),
                        part=rng.choice(parts),
                        action=rng.choice(actions),
                        who=rng.choice(who),
                        n=rng.randint(2, 12),
                        year=rng.randint(1998, 2024),
                    )
                )
        chunks.append(
            FilterChunk(
                queries=queries,
                scores=[rng.gauss(0.0, 1.0) for _ in queries],
                quota=quota(rng.randint(430, 570)),
                language="zh" if chinese else "en",
            )
        )
        made += size
    return chunks


def run_filter(ctx: Context) -> dict[str, Result]:
    from condor_dagster.methods.augcon.rouge import rouge_l

    n = AugconSizes.of(ctx).filter_queries
    chunks = filter_chunks(n)
    # The first call pays rouge-score's import (it loads nltk and scipy: ~7 s here) and jieba's
    # dictionary (~1 s): once per process, not the filter's cost.
    rouge_l("太阳能电池的工作原理是什么？", "What is the default configuration?")
    seconds: list[float] = []
    reasons: Counter[str] = Counter()
    ctx.log(f"augcon ROUGE-L filter: {ctx.reps} x {n} queries in {len(chunks)} chunks")
    for _ in range(ctx.reps):
        reasons = Counter()
        began = time.perf_counter()
        for chunk in chunks:
            for decision in filter_queries(chunk.queries, chunk.scores, chunk_quota=chunk.quota):
                reasons[decision.drop_reason or "kept"] += 1
        seconds.append(time.perf_counter() - began)
    per_100k = [s * PER_QUERIES / n for s in seconds]
    duplicate_share = reasons["rouge_duplicate"] / n
    over_quota_share = reasons["over_quota"] / n
    chinese = sum(len(c.queries) for c in chunks if c.language == "zh")
    return {
        "augcon_rouge_filter_seconds_per_100k": Result(
            per_100k,
            note=(
                f"{n:,} queries in {len(chunks):,} chunks ({chinese / n:.0%} Chinese); "
                f"{duplicate_share:.1%} dropped as ROUGE-L duplicates, {over_quota_share:.1%} "
                "over quota"
            ),
            detail={
                "queries": n,
                "chunks": len(chunks),
                "chinese_queries": chinese,
                "seconds": seconds,
                "decisions": dict(sorted(reasons.items())),
                "rouge_duplicate_share": duplicate_share,
                "over_quota_share": over_quota_share,
            },
        )
    }


# ---- synthetic triplets ------------------------------------------------------------------------
_FACTS = [
    "{subject} was first shipped in {year} after {months} months of public testing.",
    "Its {aspect} is described in a plain text file that administrators can edit by hand.",
    "A typical installation needs about {mb} MB of memory, most of it for caches.",
    "The maintainers changed the {aspect} in version {major}.{minor} to close a reported bug.",
    "When it fails, the {aspect} is the first place the documentation tells you to look.",
    "Running it on {cores} cores roughly halves the time a single core would take.",
    "Older releases kept the {aspect} elsewhere, which confused users who upgraded.",
    "The project recommends reviewing the {aspect} after every major upgrade.",
]
_VAGUE: list[tuple[str, Degradation]] = [
    ("What is this about?", "vague_instruction"),
    ("Can you explain the text?", "vague_instruction"),
    ("What does the passage say?", "one_example"),
    ("Tell me more about it.", "one_example"),
    ("What is important here?", "both"),
    ("Why does this matter?", "both"),
]


def synthetic_triplets(n: int, *, seed: int = 0) -> list[Triplet]:
    """`n` Triplets: a 300-500 character passage of facts about one subject, a specific
    question one of its facts answers, and a vague question (the degraded prompt's kind)."""
    from condor_dagster.methods.augcon.scorer import Triplet

    rng = random.Random(seed)
    out: list[Triplet] = []
    for i in range(n):
        subject = rng.choice(_EN_SUBJECTS)
        values = {
            "subject": subject[0].upper() + subject[1:],
            "aspect": rng.choice(_EN_ASPECTS),
            "year": rng.randint(1995, 2024),
            "months": rng.randint(2, 18),
            "mb": rng.choice([64, 128, 256, 512]),
            "major": rng.randint(1, 9),
            "minor": rng.randint(0, 20),
            "cores": rng.choice([2, 4, 8]),
        }
        sentences = [f.format(**values) for f in rng.sample(_FACTS, len(_FACTS))]
        context = ""
        for sentence in sentences:
            if len(context) >= 300 and len(context) + len(sentence) > 500:
                break
            context = f"{context} {sentence}".strip()
        positive = rng.choice(
            [
                f"In which year was {subject} first shipped, and how long was it tested?",
                f"How much memory does a typical installation of {subject} need?",
                f"In which version did the maintainers change the {values['aspect']} of "
                f"{subject}, and why?",
                f"Where does the documentation tell you to look first when {subject} fails?",
            ]
        )
        negative, degradation = _VAGUE[i % len(_VAGUE)]
        out.append(
            Triplet(
                context=f"{context} (Record {i}.)",
                positive=positive,
                negative=negative,
                degradation=degradation,
            )
        )
    return out


def run_scorer(ctx: Context) -> dict[str, Result]:
    from condor_dagster.methods.augcon.scorer import ScorerSettings, train_scorer

    n = AugconSizes.of(ctx).scorer_triplets
    triplets = synthetic_triplets(n)
    settings = ScorerSettings(epochs=1, seed=0)
    per_1k: list[float] = []
    walls: list[float] = []
    records = []
    ctx.log(f"augcon scorer: {ctx.reps} x train_scorer (1 epoch, {n} triplets, cpu)")
    for rep in range(ctx.reps):
        began = time.perf_counter()
        record = train_scorer(
            triplets, settings=settings, out_dir=ctx.workdir / f"augcon-scorer-{rep}", device="cpu"
        )
        walls.append(time.perf_counter() - began)
        records.append(record)
        per_1k.append(record.train_seconds / record.train_triplets * PER_TRIPLETS)
    last = records[-1]
    return {
        "augcon_scorer_train_seconds_per_1k": Result(
            per_1k,
            note=(
                f"{last.train_triplets} training triplets, 1 epoch, batch "
                f"{settings.batch_size}, {last.encoder}, cpu; whole call (load, held-out "
                f"scoring, save) {_med(walls):.1f} s"
            ),
            detail={
                "triplets": n,
                "train_triplets": last.train_triplets,
                "heldout_triplets": last.heldout_triplets,
                "train_seconds": [r.train_seconds for r in records],
                "call_seconds": walls,
                "heldout_accuracy": [r.heldout_accuracy for r in records],
                "heldout_accuracy_before": last.heldout_accuracy_before,
                "batch_size": settings.batch_size,
                "max_length": settings.max_length,
            },
        )
    }


# ---- Context-Split-Tree through the engine -----------------------------------------------------
_ZH_FACTS = [
    "{subject}最早出现在{year}年，经过了{months}个月的公开测试。",
    "它的{aspect}写在一个普通的文本文件里，管理员可以直接修改。",
    "一次典型的部署大约需要{mb}兆内存，大部分用于缓存。",
    "维护者在第{major}.{minor}版中调整了{aspect}，以修复用户报告的问题。",
    "出现故障时，文档建议首先检查{aspect}。",
    "在{cores}个核心上运行，所需时间大约是单核的一半。",
]


# The bench engine's context is 1,024 tokens, and the tiny model's tokenizer spends about 0.7
# tokens per English character and 1.8 per Chinese one: the split template alone is ~700 (en)
# and ~800 (zh) tokens. So the trees get one short few-shot example per language (the shipped
# ones are 200-300 characters each) and short chunks; the completion takes what is left of the
# context up to the budget. A real deployment's prompts are longer, which only shrinks the
# project's share of the time.
_TREE_EXAMPLES = {
    "en": [("Debian releases get security updates.", "Which releases get updates?", "Debian.")],
    "zh": [("太阳能电池把光变成电。", "太阳能电池做什么？", "发电。")],
}


def tree_examples() -> dict[str, list[Any]]:
    from condor_dagster.methods.augcon.examples import QAExample

    return {
        lang: [QAExample(context=c, question=q, answer=a) for c, q, a in rows]
        for lang, rows in _TREE_EXAMPLES.items()
    }


def tree_chunks(n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """`n` augcon/chunks rows (a fifth Chinese) of a few facts, at most 170 characters (45 in
    Chinese), so a split prompt fits the bench engine's context."""
    from condor_dagster.methods.augcon.records import METHOD, AugconOrigin, ChunkRow

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        chinese = i % 5 == 4
        facts = _ZH_FACTS if chinese else _FACTS
        subject = rng.choice(_ZH_SUBJECTS if chinese else _EN_SUBJECTS)
        values = {
            "subject": subject if chinese else subject[0].upper() + subject[1:],
            "aspect": rng.choice(_ZH_ASPECTS if chinese else _EN_ASPECTS),
            "year": rng.randint(1995, 2024),
            "months": rng.randint(2, 18),
            "mb": rng.choice([64, 128, 256, 512]),
            "major": rng.randint(1, 9),
            "minor": rng.randint(0, 20),
            "cores": rng.choice([2, 4, 8]),
        }
        limit = 45 if chinese else 170
        text = ""
        for sentence in (f.format(**values) for f in rng.sample(facts, len(facts))):
            if text and len(text) + len(sentence) > limit:
                continue
            text = text + sentence if chinese else f"{text} {sentence}".strip()
        document = f"d-bench-{i // 4:04d}"
        chunk_quota = quota(len(text))
        chunk_id = f"ck-bench-{i:05d}"
        rows.append(
            ChunkRow(
                id=chunk_id,
                parent_id=document,
                method=METHOD,
                partition_key=f"shard-{i // 16:03d}",
                language="zh" if chinese else "en",
                origin=AugconOrigin(
                    document_id=document,
                    source=f"bench/{document}.html",
                    chunk_id=chunk_id,
                    node_path="",
                    depth=0,
                    tree_pass=0,
                    context=text,
                ),
                position=i % 4,
                text=text,
                chars=len(text),
                quota=chunk_quota,
                target=generation_target(chunk_quota),
            ).model_dump()
        )
    return rows


def raw_structured_chat(llm: Any, requests: Sequence[LLMRequest], base_seed: int = 0) -> int:
    """What a script on raw vLLM writes for one tree level: one `LLM.chat` over the level's
    prompts with the same sampling params, seeds and JSON schema. Returns completion tokens."""
    from vllm import SamplingParams as VSamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    params = []
    for r in requests:
        s = r.sampling
        schema = r.json_schema()
        params.append(
            VSamplingParams(
                temperature=s.temperature,
                top_p=s.top_p,
                top_k=s.top_k,
                max_tokens=s.max_tokens,
                repetition_penalty=s.repetition_penalty,
                stop=list(s.stop) or None,
                seed=derive_seed(r, base_seed),
                structured_outputs=(
                    StructuredOutputsParams(json=schema) if schema is not None else None
                ),
            )
        )
    outputs = llm.chat([r.messages_as_dicts() for r in requests], params, use_tqdm=False)
    return sum(len(o.outputs[0].token_ids) for o in outputs)


def run_tree(ctx: Context) -> dict[str, Result]:
    from condor_dagster.methods.augcon.context_tree import (
        TreeSettings,
        grow_trees,
        root_job,
        split_request,
    )

    services = ctx.services
    sizes = AugconSizes.of(ctx)
    chunks = tree_chunks(sizes.tree_chunks)
    examples = tree_examples()
    settings = TreeSettings()
    # ContextTreeConfig's temperature; a shorter budget than its 768 (the tiny model writes
    # noise until the budget either way).
    sampling = SamplingParams(temperature=0.85, max_tokens=sizes.tree_max_tokens)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    llm = services.raw_engine()
    # The levels the trees send (they depend on the completions, which the seeds fix): the
    # roots are known up front, the rest come from the resource's warm-up run.
    levels: list[list[LLMRequest]] = [
        [
            split_request(
                root_job(c, 0),
                examples["zh" if c["language"] == "zh" else "en"],
                sampling=sampling,
                structured=settings.structured_output,
            )
            for c in chunks
        ]
    ]
    nodes: list[int] = []

    def tree_side(record: bool = False) -> float:
        resource = services.engine_resource(ctx)  # fresh cache: every request generates
        resource.response_cache()
        sent: list[list[LLMRequest]] = []
        misses = 0

        def generate(requests: Sequence[LLMRequest]) -> Sequence[Completion]:
            nonlocal misses
            sent.append(list(requests))
            result = resource.generate(requests)
            misses += result.stats.cache_misses
            rejected = [c.text for c in result.completions if c.finish_reason == "rejected"]
            assert not rejected, f"split prompts over the engine's context: {rejected[0]}"
            return result.completions

        rows: list[Any] = []

        def go() -> None:
            rows.extend(
                grow_trees(
                    chunks,
                    generate,
                    examples=examples,
                    sampling=sampling,
                    settings=settings,
                    run_id="bench",
                    now=now,
                )
            )

        elapsed = timed(go)
        # A fresh cache: every distinct request generates (equal ones in a batch are sent once).
        assert misses > 0, "the tree side was answered from a cache"
        if record:
            levels[:] = sent
        nodes.append(len(rows))
        return elapsed

    tokens: list[int] = []

    def raw_side() -> float:
        return timed(lambda: tokens.append(sum(raw_structured_chat(llm, lv) for lv in levels)))

    ctx.log(f"augcon tree: warm-up, then {ctx.reps} x (tree, raw) over {len(chunks)} chunks")
    raw_side()  # the roots only: the engine and the schema's grammar warm up
    tree_side(record=True)
    requests = sum(len(level) for level in levels)
    ours: list[float] = []
    raw: list[float] = []
    for rep in range(ctx.reps):
        if rep % 2:
            raw.append(raw_side())
            ours.append(tree_side())
        else:
            ours.append(tree_side())
            raw.append(raw_side())
    tree_rps = [requests / s for s in ours]
    raw_rps = [requests / s for s in raw]
    return {
        "augcon_cst_overhead_ratio": Result(
            ratios(ours, raw),
            note=(
                f"{len(chunks)} chunks, {len(levels)} levels, {requests} split requests "
                f"(max_tokens {sizes.tree_max_tokens}, JSON schema); raw {_med(raw_rps):.1f} "
                f"requests/s, trees {_med(tree_rps):.1f}"
            ),
            detail={
                "chunks": len(chunks),
                "levels": [len(level) for level in levels],
                "requests": requests,
                "nodes": nodes[-1],
                "max_tokens": sizes.tree_max_tokens,
                "raw_seconds": raw,
                "tree_seconds": ours,
                "raw_requests_per_s": raw_rps,
                "tree_requests_per_s": tree_rps,
                "raw_completion_tokens": tokens[1:],
            },
        )
    }


def _med(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]
