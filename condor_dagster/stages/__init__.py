"""Shared Dagster pieces every method builds its graph from: stage factories (dedup, answers,
refine, candidates), sft_dataset, partition helpers, metadata."""
