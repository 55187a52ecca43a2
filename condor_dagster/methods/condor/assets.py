"""Condor's asset graph: its own stages (knowledge_tree, raw_questions, refine_quality) and the
shared stages built for the "tags" partitions, ending in condor/sft_candidates."""

from condor_dagster.methods.condor import export
from condor_dagster.methods.condor.candidates import condor_candidates
from condor_dagster.methods.condor.knowledge_tree import knowledge_tree
from condor_dagster.methods.condor.partitions import GROUP, KEY_PREFIX, METHOD, key, tags_partitions
from condor_dagster.methods.condor.raw_questions import raw_questions
from condor_dagster.methods.condor.refine_quality import refine_quality
from condor_dagster.stages.answers import answers_stage
from condor_dagster.stages.candidates import candidates_stage
from condor_dagster.stages.dedup import dedup_stage
from condor_dagster.stages.refine import refine_stage
from condor_dagster.stages.sft_dataset import MethodExport

deduplicated_questions = dedup_stage(
    key_prefix=KEY_PREFIX,
    partitions_def=tags_partitions,
    group=GROUP,
    upstream=key("raw_questions"),
)
draft_answers = answers_stage(
    key_prefix=KEY_PREFIX,
    partitions_def=tags_partitions,
    group=GROUP,
    upstream=key("deduplicated_questions"),
    id_prefix="a",
)
refined_answers = refine_stage(
    key_prefix=KEY_PREFIX,
    partitions_def=tags_partitions,
    group=GROUP,
    upstream=key("draft_answers"),
    id_prefix="r",
)
sft_candidates = candidates_stage(
    method=METHOD,
    key_prefix=KEY_PREFIX,
    partitions_def=tags_partitions,
    group=GROUP,
    ins={"refined": key("refined_answers"), "drafts": key("draft_answers")},
    build=condor_candidates,
)

__all__ = ["knowledge_tree", "raw_questions", "refine_quality"]

TAG_ASSETS = [
    raw_questions,
    deduplicated_questions,
    draft_answers,
    refined_answers,
    refine_quality,
    sft_candidates,
]
CONDOR_ASSETS = [knowledge_tree, *TAG_ASSETS]

CONDOR_EXPORT = MethodExport(
    method=METHOD,
    candidates=key("sft_candidates"),
    embeddings=key("deduplicated_questions"),
    extra={"knowledge_tree": key("knowledge_tree"), "refine_quality": key("refine_quality")},
    partitioned_extra=frozenset({"refine_quality"}),
    origin_check=export.tree_origin_check,
    card_section=export.card_section,
    jsonl_fields=export.JSONL_FIELDS,
)
