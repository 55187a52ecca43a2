"""AugCon's definitions: its assets, the corpus documents it reads, the corpus sensor that adds
shards and requests their runs, and its jobs."""

import dagster as dg

from condor_dagster.methods.augcon.assets import AUGCON_ASSETS, SHARD_ASSETS, SHARED_ASSETS
from condor_dagster.methods.corpus.assets import CORPUS_ASSETS
from condor_dagster.methods.corpus.partitions import key as corpus_key
from condor_dagster.methods.corpus.sensors import corpus_sensor

SHARD_SELECTION = [*CORPUS_ASSETS, *SHARD_ASSETS]

augcon_shards_job = dg.define_asset_job(
    "augcon_shards_job",
    selection=SHARD_SELECTION,
    description="Documents, chunks, Context-Split-Trees, filtered questions, grounded answers "
    "and candidates for the selected corpus shards (needs augcon_scorer_job's assets).",
)
augcon_scorer_job = dg.define_asset_job(
    "augcon_scorer_job",
    selection=SHARED_ASSETS,
    description="Train the query scorer on every materialized chunk and pick the answer demos.",
)
augcon_sensor = corpus_sensor(
    name="augcon_corpus_sensor",
    asset_selection=[corpus_key("documents"), *(a.key for a in SHARD_ASSETS)],
)

defs = dg.Definitions(
    assets=[*CORPUS_ASSETS, *AUGCON_ASSETS],
    jobs=[augcon_shards_job, augcon_scorer_job],
    sensors=[augcon_sensor],
)
