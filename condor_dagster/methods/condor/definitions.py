"""Condor's definitions: its assets, the tags sensor and its jobs."""

import dagster as dg

from condor_dagster.methods.condor.assets import CONDOR_ASSETS, TAG_ASSETS
from condor_dagster.methods.condor.knowledge_tree import knowledge_tree
from condor_dagster.methods.condor.sensors import tags_sensor

knowledge_tree_job = dg.define_asset_job(
    "knowledge_tree_job",
    selection=[knowledge_tree],
    description="Grow the World Knowledge Tree; the tags sensor then adds its leaf tags.",
)
condor_tags_job = dg.define_asset_job(
    "condor_tags_job",
    selection=TAG_ASSETS,
    description="Questions, dedup, answers, refinement and candidates for the selected tags.",
)

defs = dg.Definitions(
    assets=CONDOR_ASSETS,
    jobs=[knowledge_tree_job, condor_tags_job],
    sensors=[tags_sensor],
)
