"""AugCon's asset graph: chunks -> context_tree -> (scorer_triplets -> query_scorer) ->
filtered_questions -> deduplicated_questions -> grounded_answers (with answer_demos) ->
sft_candidates, partitioned by corpus shard (the scorer and the demos serve every shard)."""

from condor_dagster.methods.augcon import export
from condor_dagster.methods.augcon.answer_assets import answer_demos, grounded_answers
from condor_dagster.methods.augcon.candidates import augcon_candidates
from condor_dagster.methods.augcon.filter_assets import filtered_questions
from condor_dagster.methods.augcon.partitions import GROUP, KEY_PREFIX, key
from condor_dagster.methods.augcon.records import METHOD
from condor_dagster.methods.augcon.scorer_assets import query_scorer, scorer_triplets
from condor_dagster.methods.augcon.tree_assets import chunks, context_tree
from condor_dagster.methods.corpus.partitions import corpus_shards
from condor_dagster.methods.corpus.partitions import key as corpus_key
from condor_dagster.stages.candidates import candidates_stage
from condor_dagster.stages.dedup import dedup_stage
from condor_dagster.stages.sft_dataset import MethodExport

deduplicated_questions = dedup_stage(
    key_prefix=KEY_PREFIX,
    partitions_def=corpus_shards,
    group=GROUP,
    upstream=key("filtered_questions"),
)
sft_candidates = candidates_stage(
    method=METHOD,
    key_prefix=KEY_PREFIX,
    partitions_def=corpus_shards,
    group=GROUP,
    ins={"answers": key("grounded_answers")},
    build=augcon_candidates,
)

# What a new shard needs (the sensor's runs): the scorer and demos are trained once.
SHARD_ASSETS = [
    chunks,
    context_tree,
    filtered_questions,
    deduplicated_questions,
    grounded_answers,
    sft_candidates,
]
# Trained once over every materialized shard, before the shards' filter and answers.
SHARED_ASSETS = [scorer_triplets, query_scorer, answer_demos]
AUGCON_ASSETS = [*SHARD_ASSETS, *SHARED_ASSETS]

AUGCON_EXPORT = MethodExport(
    method=METHOD,
    candidates=key("sft_candidates"),
    embeddings=key("deduplicated_questions"),
    extra={"documents": corpus_key("documents"), "chunks": key("chunks")},
    partitioned_extra=frozenset({"documents", "chunks"}),
    origin_check=export.document_origin_check,
    card_section=export.card_section,
    jsonl_fields=export.JSONL_FIELDS,
)
