"""Condor (arXiv 2501.12273): World Knowledge Tree -> task x difficulty questions per tag ->
draft answers -> Self-Reflection Refinement. Partitions: the tree's leaf tags.

Pure modules: taxonomy, tree, questions, records, candidates, refine_judge, export, trace.
Dagster: assets (the graph), knowledge_tree, raw_questions, refine_quality, sensors,
definitions."""
