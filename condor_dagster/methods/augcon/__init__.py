"""AugCon (arXiv 2405.16579): questions from a corpus by Context-Split-Tree, a trained
query scorer, ROUGE-L filtering and context-grounded answers."""
