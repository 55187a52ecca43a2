"""One module per pipeline stage; `CONDOR_ASSETS` lists them in graph order."""

from condor_dagster.assets.deduplicated_questions import deduplicated_questions
from condor_dagster.assets.draft_answers import draft_answers
from condor_dagster.assets.knowledge_tree import knowledge_tree
from condor_dagster.assets.raw_questions import raw_questions
from condor_dagster.assets.refine_quality import refine_quality
from condor_dagster.assets.refined_answers import refined_answers
from condor_dagster.assets.sft_dataset import sft_dataset

TAG_ASSETS = [
    raw_questions,
    deduplicated_questions,
    draft_answers,
    refined_answers,
    refine_quality,
]
CONDOR_ASSETS = [knowledge_tree, *TAG_ASSETS, sft_dataset]

__all__ = [
    "CONDOR_ASSETS",
    "TAG_ASSETS",
    "deduplicated_questions",
    "draft_answers",
    "knowledge_tree",
    "raw_questions",
    "refine_quality",
    "refined_answers",
    "sft_dataset",
]
