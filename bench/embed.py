"""embed_overhead_ratio: SentenceTransformerEmbeddings.embed vs raw SentenceTransformer.encode
(same model instance, same options) on the same questions."""

from __future__ import annotations

from bench.core import Context, Result, paired, ratios, timed
from bench.data import synthetic_questions
from condor_dagster.resources.embeddings import SentenceTransformerEmbeddings


def run(ctx: Context) -> dict[str, Result]:
    texts = synthetic_questions(ctx.sizes.embed_questions)
    resource = SentenceTransformerEmbeddings()
    model = resource.model()

    def ours() -> float:
        return timed(lambda: resource.embed(texts))

    def raw() -> float:
        return timed(
            lambda: model.encode(
                texts,
                batch_size=resource.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        )

    ctx.log(f"embeddings: warm-up, then {ctx.reps} x (resource, raw) on {len(texts)} questions")
    # Warm-up on a slice: MiniLM does ~150 questions/s on 2 cores, a full pass is half a minute.
    resource.embed(texts[:256])
    ours_s, raw_s = paired(ctx.reps, ours, raw)
    return {
        "embed_overhead_ratio": Result(
            ratios(ours_s, raw_s),
            note=(
                f"{len(texts)} questions, batch {resource.batch_size}; raw "
                f"{sorted(raw_s)[len(raw_s) // 2]:.1f} s"
            ),
            detail={
                "questions": len(texts),
                "resource_seconds": ours_s,
                "raw_seconds": raw_s,
                "questions_per_s": [len(texts) / s for s in raw_s],
            },
        )
    }
