"""knowledge_tree: seed taxonomy YAML -> LLM expansion, coarse to fine -> tag nodes.

Leaf node ids become the "tags" partitions (the sensor in `sensors.py` keeps them in step).
"""

from collections import Counter

import dagster as dg
import polars as pl
from pydantic import Field

from condor_dagster.core.llm import SamplingParams
from condor_dagster.core.prompts import code_version, prompts_sha
from condor_dagster.core.rows import rows_to_frame
from condor_dagster.methods.condor.partitions import GROUP, KEY_PREFIX, key
from condor_dagster.methods.condor.records import KnowledgeTreeRow
from condor_dagster.methods.condor.taxonomy import default_taxonomy_path, load_taxonomy, seed_nodes
from condor_dagster.methods.condor.tree import PROMPT, expand_tree
from condor_dagster.resources.llm import GenerationResult, LLMResource
from condor_dagster.stages.metadata import frame_metadata, generation_metadata
from condor_dagster.stages.partitions import GPU_POOL, run_started_at


class KnowledgeTreeConfig(dg.Config):
    """How the World Knowledge Tree grows from the seed taxonomy."""

    taxonomy_path: str | None = None
    """Seed taxonomy YAML; None uses the packaged 45 Condor roots (English and Chinese)."""
    languages: list[str] = Field(default_factory=lambda: ["en"])
    """Keep only roots in these languages (the packaged file has "en" and "zh")."""
    max_roots: int | None = Field(default=None, ge=1)
    """Use only the first N roots per language (small trees for demos and tests)."""
    depth: int = Field(default=3, ge=1, le=6)
    """Levels including the roots: 3 = root -> sub-domain -> leaf."""
    subdomains_per_root: int = Field(default=6, ge=1, le=12)
    """Children asked for each root."""
    leaves_per_subdomain: int = Field(default=3, ge=1, le=12)
    """Children asked for each node below the roots."""
    temperature: float = Field(default=0.7, ge=0.0)
    """Sampling temperature of the expansion."""
    max_tokens: int = Field(default=256, ge=16)
    """Completion budget of one expansion request."""

    def fan_out(self) -> list[int]:
        return [self.subdomains_per_root] + [self.leaves_per_subdomain] * max(self.depth - 2, 0)


def _code_version() -> str:
    return code_version([prompts_sha(PROMPT)], KnowledgeTreeConfig().model_dump())


@dg.asset(
    key_prefix=list(KEY_PREFIX),
    group_name=GROUP,
    kinds={"vllm", "parquet"},
    code_version=_code_version(),
    check_specs=[dg.AssetCheckSpec("has_leaf_tags", asset=key("knowledge_tree"))],
    pool=GPU_POOL,
)
def knowledge_tree(
    context: dg.AssetExecutionContext, config: KnowledgeTreeConfig, llm: LLMResource
):
    """The tag tree: one row per node (id, parent, level, name, path, language, source)."""
    path = config.taxonomy_path or str(default_taxonomy_path())
    roots = [r for r in load_taxonomy(path) if r.language in config.languages]
    if not roots:
        raise ValueError(
            f"taxonomy {path} has no roots in languages {config.languages}; "
            "set languages to ones the file has (e.g. ['en'] or ['zh'])"
        )
    if config.max_roots is not None:
        by_language: Counter[str] = Counter()
        kept = []
        for root in roots:
            by_language[root.language] += 1
            if by_language[root.language] <= config.max_roots:
                kept.append(root)
        roots = kept
    results: list[GenerationResult] = []

    def generate(requests):
        result = llm.generate(requests)
        results.append(result)
        context.log.info(f"knowledge_tree: expanded {len(requests)} nodes")
        return result.completions

    expansion = expand_tree(
        seed_nodes(roots),
        generate,
        depth=config.depth,
        fan_out=config.fan_out(),
        sampling=SamplingParams(temperature=config.temperature, max_tokens=config.max_tokens),
        run_id=context.run.run_id,
        now=run_started_at(context),
    )
    rows = [
        KnowledgeTreeRow(**node.model_dump(), lineage=expansion.lineage.get(node.node_id))
        for node in expansion.nodes
    ]
    frame = rows_to_frame(rows, KnowledgeTreeRow)
    leaves = frame.filter(pl.col("is_leaf"))
    drops = Counter(d.reason for d in expansion.drops)
    stats = [r.stats for r in results]
    yield dg.Output(
        frame,
        metadata={
            **frame_metadata(frame, preview_columns=["node_id", "level", "path_text", "source"]),
            **generation_metadata(stats),
            "taxonomy_path": path,
            "roots": len(roots),
            "leaf_tags": leaves.height,
            "nodes_by_source": dict(Counter(frame["source"].to_list())),
            "dropped_names": dict(drops),
            # The same counts under the names every stage uses.
            "kept": int((frame["source"] == "llm").sum()),
            "dropped_by_reason": dict(drops),
        },
    )
    yield dg.AssetCheckResult(
        check_name="has_leaf_tags",
        passed=leaves.height > 0,
        metadata={"leaf_tags": leaves.height},
    )
