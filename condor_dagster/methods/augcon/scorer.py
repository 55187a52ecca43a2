"""AugCon's query scorer (arXiv 2405.16579): s(C, q), how good question q is for context C.

An encoder reads the context and the question as a text pair, its token states are mean-pooled
over the attention mask and a value head (a linear layer) maps the pooled vector to one score.
Both are fine-tuned end to end, contrastively: a positive is a question the LLM wrote from the
full prompt, its negative one it wrote for the same context from a degraded prompt.

Losses:
  bradley_terry    the paper's: -log sigmoid(s(C, q+) - s(C, q-)).
  mean_difference  the seed repository's: -mean(sigmoid(s+)) + mean(sigmoid(s-)).

No dagster here; torch and transformers are imported inside functions so importing this module
stays cheap. `train_scorer` writes a model folder atomically; `load_scorer` gives the
process-wide QueryScorer of such a folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from condor_dagster.core.bundled_encoder import BUNDLED_MODEL_ID, bundled_model_path

if TYPE_CHECKING:
    import torch

Degradation = Literal["vague_instruction", "one_example", "both"]
Loss = Literal["bradley_terry", "mean_difference"]

SCORER_FILE = "scorer.json"
VALUE_HEAD_FILE = "value_head.safetensors"
FORMAT_VERSION = 1
# The fewest triplets that can fill both a training and a held-out split.
MIN_TRIPLETS = 4
# Context tokens always kept when a long question forces a longer input than max_length, so the
# question is never scored without its context.
_MIN_CONTEXT_TOKENS = 16


# ---- records ----------------------------------------------------------------------------------
class Triplet(BaseModel):
    """One training example: a context, a question from the full prompt and one from a degraded
    prompt for the same context."""

    context: str
    """The text the questions were generated from."""
    positive: str
    """Question the LLM wrote from the full prompt (should score higher)."""
    negative: str
    """Question the LLM wrote for the same context from a degraded prompt."""
    degradation: Degradation
    """How the negative's prompt was degraded: vague_instruction, one_example or both."""

    @field_validator("context", "positive", "negative")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty or whitespace")
        return value

    @model_validator(mode="after")
    def _distinct(self) -> Triplet:
        # A tie teaches nothing and makes the held-out check (s+ > s-) fail by construction.
        if self.positive.strip() == self.negative.strip():
            raise ValueError(
                f"positive and negative are the same question ({self.positive[:80]!r}); "
                "drop such pairs before training"
            )
        return self


class ScorerSettings(BaseModel):
    """How to train the query scorer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    encoder: str | None = None
    """Hugging Face encoder folder (loadable by AutoModel/AutoTokenizer); None uses the bundled
    all-MiniLM-L6-v2."""
    loss: Loss = "bradley_terry"
    """bradley_terry (the paper's) or mean_difference (the seed repository's)."""
    epochs: int = 3
    """Passes over the training triplets."""
    learning_rate: float = 3e-5
    """AdamW peak learning rate of the encoder (pretrained: small steps)."""
    head_learning_rate: float = 1e-3
    """AdamW peak learning rate of the value head (freshly initialised: larger steps)."""
    batch_size: int = 16
    """Triplets per optimizer step (each gives two encoder inputs)."""
    max_length: int = 256
    """Tokens per (context, question) input; the context is cut, never the question."""
    heldout_fraction: float = 0.2
    """Share of contexts held out to measure accuracy, in (0, 0.5]."""
    seed: int = 0
    """Seeds the value head's initialisation, dropout and batch order."""
    threads: int | None = None
    """torch CPU threads while training; None keeps torch's default."""

    @field_validator("encoder")
    @classmethod
    def _encoder_folder(cls, value: str | None) -> str | None:
        if value is not None and not (Path(value).expanduser() / "config.json").is_file():
            raise ValueError(
                f"encoder {value!r} is not a Hugging Face model folder (no config.json); "
                f"leave encoder unset to use the bundled {BUNDLED_MODEL_ID}"
            )
        return value

    @field_validator("epochs", "batch_size")
    @classmethod
    def _positive_int(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value

    @field_validator("learning_rate", "head_learning_rate")
    @classmethod
    def _positive_rate(cls, value: float) -> float:
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"must be a positive number, got {value}")
        return value

    @field_validator("max_length")
    @classmethod
    def _max_length(cls, value: int) -> int:
        if value < 32:
            raise ValueError(f"max_length must be at least 32 tokens, got {value}")
        return value

    @field_validator("heldout_fraction")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not 0 < value <= 0.5:
            raise ValueError(f"heldout_fraction must be in (0, 0.5], got {value}")
        return value

    @field_validator("threads")
    @classmethod
    def _threads(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"threads must be at least 1 or None, got {value}")
        return value

    def encoder_path(self) -> Path:
        if self.encoder is None:
            return bundled_model_path()
        return Path(self.encoder).expanduser().resolve()

    def encoder_id(self) -> str:
        """Short encoder name for lineage."""
        return BUNDLED_MODEL_ID if self.encoder is None else self.encoder_path().name


class TrainingRecord(BaseModel):
    """What one training run did and how well the result separates held-out pairs."""

    encoder: str
    """Encoder the scorer was fine-tuned from (short name)."""
    loss: Loss
    """Training loss used."""
    epochs: int
    """Passes over the training triplets."""
    train_triplets: int
    """Triplets trained on."""
    heldout_triplets: int
    """Triplets held out (their contexts never appear in training)."""
    triplets_by_degradation: dict[str, int]
    """All triplets per degradation label."""
    loss_per_epoch: list[float]
    """Mean training loss of each epoch."""
    heldout_accuracy: float
    """Fraction of held-out triplets with s(C, q+) > s(C, q-) after training."""
    heldout_accuracy_by_degradation: dict[str, float]
    """heldout_accuracy per degradation label present in the held-out split."""
    heldout_accuracy_before: float
    """The same accuracy with the untrained head on the pretrained encoder (about chance)."""
    train_seconds: float
    """Wall seconds of the optimisation loop (no loading, evaluation or saving)."""
    model_dir: str
    """Absolute folder the trained scorer was saved to."""


# ---- splitting ---------------------------------------------------------------------------------
def _context_key(context: str) -> str:
    return hashlib.sha256(context.encode("utf-8")).hexdigest()


def split_triplets(
    triplets: Sequence[Triplet], *, heldout_fraction: float
) -> tuple[list[Triplet], list[Triplet]]:
    """(train, heldout), deterministic and independent of input order.

    Triplets are grouped by context so a context never lands in both splits. Groups are
    stratified by their degradation labels; inside each stratum they are ordered by the hash of
    the context and every ~1/heldout_fraction-th group is held out, with one running counter over
    all strata so the total held out is round(heldout_fraction * groups).
    """
    groups: dict[str, list[Triplet]] = defaultdict(list)
    for triplet in triplets:
        groups[_context_key(triplet.context)].append(triplet)
    strata: dict[str, list[str]] = defaultdict(list)
    for key, members in groups.items():
        strata["+".join(sorted({t.degradation for t in members}))].append(key)
    train: list[Triplet] = []
    heldout: list[Triplet] = []
    counter = 0.5  # starting at one half rounds the per-stratum shares instead of flooring them
    for stratum in sorted(strata):
        for key in sorted(strata[stratum]):
            counter += heldout_fraction
            # Sort members too: the split must not depend on the order triplets arrived in.
            members = sorted(groups[key], key=lambda t: (t.positive, t.negative, t.degradation))
            if counter >= 1.0 - 1e-9:  # tolerance: float sums of e.g. 0.25 land on 1.0
                counter -= 1.0
                heldout.extend(members)
            else:
                train.extend(members)
    return train, heldout


# ---- torch helpers -----------------------------------------------------------------------------
@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with `threads` torch CPU threads (None: unchanged), then restore.

    torch's thread count is process-wide, so concurrent callers with different values race.
    """
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _model_token_limit(encoder: Any, tokenizer: Any) -> int:
    """Longest input the encoder takes (position embeddings, tokenizer's model_max_length)."""
    limits = [int(getattr(encoder.config, "max_position_embeddings", 512))]
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    # Tokenizers without a limit report a huge sentinel (1e30).
    if isinstance(tokenizer_limit, int) and tokenizer_limit < 1_000_000:
        limits.append(tokenizer_limit)
    return min(limits)


class QueryScorer:
    """A trained (or training) scorer: encoder + tokenizer + value head on one device."""

    def __init__(
        self,
        *,
        encoder: Any,
        tokenizer: Any,
        head: torch.nn.Linear,
        max_length: int,
        device: str = "cpu",
    ) -> None:
        self.encoder = encoder.to(device)
        self.tokenizer = tokenizer
        self.head = head.to(device)
        self.max_length = max_length
        self.device = device
        self.token_limit = _model_token_limit(encoder, tokenizer)

    @classmethod
    def load(cls, model_dir: Path, *, device: str = "cpu") -> QueryScorer:
        """The scorer saved in `model_dir` by train_scorer."""
        model_dir = Path(model_dir)
        meta_path = model_dir / SCORER_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{model_dir} holds no trained query scorer ({SCORER_FILE} is missing); "
                "materialize augcon/query_scorer to train one"
            )
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        encoder = AutoModel.from_pretrained(str(model_dir))
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        head = torch.nn.Linear(int(encoder.config.hidden_size), 1)
        head.load_state_dict(load_file(str(model_dir / VALUE_HEAD_FILE)))
        scorer = cls(
            encoder=encoder,
            tokenizer=tokenizer,
            head=head,
            max_length=int(meta["max_length"]),
            device=device,
        )
        scorer.eval()
        return scorer

    def eval(self) -> None:
        self.encoder.eval()
        self.head.eval()

    def train(self) -> None:
        self.encoder.train()
        self.head.train()

    def _encode(self, pairs: Sequence[tuple[str, str]]) -> dict[str, torch.Tensor]:
        """Tokenized (context, question) pairs: the context is cut to fit, never the question."""
        questions = [q for _, q in pairs]
        question_tokens = self.tokenizer(questions, add_special_tokens=False)["input_ids"]
        longest = max(len(ids) for ids in question_tokens)
        special = self.tokenizer.num_special_tokens_to_add(pair=True)
        if longest + special + 1 > self.token_limit:
            raise ValueError(
                f"a question of {longest} tokens does not fit the encoder's {self.token_limit} "
                "token input together with its context; drop over-long questions"
            )
        # A long question widens this batch's budget (up to the encoder's limit) rather than
        # eating the whole context.
        max_length = min(
            self.token_limit, max(self.max_length, longest + special + _MIN_CONTEXT_TOKENS)
        )
        encoded = self.tokenizer(
            [c for c, _ in pairs],
            questions,
            truncation="only_first",
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        return {name: tensor.to(self.device) for name, tensor in encoded.items()}

    def forward(self, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
        """Raw scores of `pairs`, shape (n,), with autograd as the caller's mode allows."""
        encoded = self._encode(pairs)
        hidden = self.encoder(**encoded).last_hidden_state
        # Mean over real tokens: the pooling all-MiniLM-L6-v2 was trained with.
        mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        scores: torch.Tensor = self.head(pooled).squeeze(-1)
        return scores

    def score(self, pairs: Sequence[tuple[str, str]], *, batch_size: int = 64) -> list[float]:
        """Raw value-head scores of (context, question) pairs, in order; higher is better."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        pairs = list(pairs)
        if not pairs:
            return []
        import torch

        # Batching similar lengths together wastes less compute on padding.
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        scores = [0.0] * len(pairs)
        self.eval()
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                values = self.forward([pairs[i] for i in chunk]).float().cpu().tolist()
                for index, value in zip(chunk, values, strict=True):
                    scores[index] = float(value)
        return scores

    def save(self, folder: Path, *, meta: dict[str, Any]) -> None:
        """Write encoder, tokenizer, value head and scorer.json (last) into `folder`."""
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))
        state = {name: t.detach().cpu().contiguous() for name, t in self.head.state_dict().items()}
        save_file(state, str(folder / VALUE_HEAD_FILE))
        payload = {"format_version": FORMAT_VERSION, "max_length": self.max_length, **meta}
        (folder / SCORER_FILE).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


# ---- training ----------------------------------------------------------------------------------
def _pairwise_loss(positive: torch.Tensor, negative: torch.Tensor, loss: Loss) -> torch.Tensor:
    import torch.nn.functional as F

    if loss == "bradley_terry":
        return -F.logsigmoid(positive - negative).mean()
    return -positive.sigmoid().mean() + negative.sigmoid().mean()


def _accuracy(
    scorer: QueryScorer, triplets: Sequence[Triplet], *, batch_size: int
) -> tuple[float, dict[str, float]]:
    """Share of triplets with s(C, q+) > s(C, q-), overall and per degradation."""
    pairs = [(t.context, t.positive) for t in triplets] + [
        (t.context, t.negative) for t in triplets
    ]
    scores = scorer.score(pairs, batch_size=batch_size)
    n = len(triplets)
    wins: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for i, triplet in enumerate(triplets):
        totals[triplet.degradation] += 1
        wins[triplet.degradation] += scores[i] > scores[n + i]
    by_degradation = {label: wins[label] / totals[label] for label in sorted(totals)}
    return sum(wins.values()) / n, by_degradation


def _check_counts(
    triplets: Sequence[Triplet],
    train: Sequence[Triplet],
    heldout: Sequence[Triplet],
    settings: ScorerSettings,
) -> None:
    if len(triplets) < MIN_TRIPLETS:
        raise ValueError(
            f"the query scorer needs at least {MIN_TRIPLETS} triplets, got {len(triplets)}; "
            "generate more triplets (more contexts or questions per context)"
        )
    contexts = len({t.context for t in triplets})
    if not heldout:
        raise ValueError(
            f"held-out split is empty: {len(triplets)} triplets over {contexts} contexts with "
            f"heldout_fraction={settings.heldout_fraction}; generate more triplets from more "
            "contexts or raise heldout_fraction"
        )
    if not train:
        raise ValueError(
            f"training split is empty: all {len(heldout)} triplets ({contexts} contexts) were "
            f"held out with heldout_fraction={settings.heldout_fraction}; generate triplets from "
            "more contexts or lower heldout_fraction"
        )


def fit_scorer(
    triplets: Sequence[Triplet],
    *,
    settings: ScorerSettings,
    out_dir: Path,
    device: str = "cpu",
) -> tuple[QueryScorer, TrainingRecord]:
    """Train a scorer, save it to `out_dir` atomically; return it (in memory) and its record."""
    train, heldout = split_triplets(triplets, heldout_fraction=settings.heldout_fraction)
    _check_counts(triplets, train, heldout, settings)
    with torch_threads(settings.threads):
        return _fit(triplets, train, heldout, settings=settings, out_dir=out_dir, device=device)


def train_scorer(
    triplets: Sequence[Triplet],
    *,
    settings: ScorerSettings,
    out_dir: Path,
    device: str = "cpu",
) -> TrainingRecord:
    """Train a scorer on `triplets`, save it to `out_dir` atomically and return its record.

    The folder holds the encoder and tokenizer (save_pretrained), value_head.safetensors and
    scorer.json (settings + record). Raises ValueError for fewer than 4 triplets or when a split
    comes out empty.
    """
    return fit_scorer(triplets, settings=settings, out_dir=out_dir, device=device)[1]


def _fit(
    triplets: Sequence[Triplet],
    train: list[Triplet],
    heldout: list[Triplet],
    *,
    settings: ScorerSettings,
    out_dir: Path,
    device: str,
) -> tuple[QueryScorer, TrainingRecord]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(settings.seed)
    encoder_path = str(settings.encoder_path())
    encoder = AutoModel.from_pretrained(encoder_path)
    tokenizer = AutoTokenizer.from_pretrained(encoder_path)
    head = torch.nn.Linear(int(encoder.config.hidden_size), 1)  # seeded by manual_seed above
    scorer = QueryScorer(
        encoder=encoder,
        tokenizer=tokenizer,
        head=head,
        max_length=settings.max_length,
        device=device,
    )
    eval_batch = max(2 * settings.batch_size, 64)
    accuracy_before, _ = _accuracy(scorer, heldout, batch_size=eval_batch)

    optimizer = torch.optim.AdamW(
        [
            {"params": list(scorer.encoder.parameters()), "lr": settings.learning_rate},
            {"params": list(scorer.head.parameters()), "lr": settings.head_learning_rate},
        ],
        weight_decay=0.01,
    )
    steps_per_epoch = math.ceil(len(train) / settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    warmup = max(1, total_steps // 10)

    def schedule(step: int) -> float:
        # Short warm-up so the random head's first gradients do not wreck the pretrained
        # encoder, then linear decay to zero.
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    order_rng = random.Random(settings.seed)
    loss_per_epoch: list[float] = []
    started = time.perf_counter()
    scorer.train()
    for _ in range(settings.epochs):
        order = list(range(len(train)))
        order_rng.shuffle(order)
        total = 0.0
        for start in range(0, len(order), settings.batch_size):
            batch = [train[i] for i in order[start : start + settings.batch_size]]
            # One forward for positives and negatives: same padding, half the calls.
            pairs = [(t.context, t.positive) for t in batch] + [
                (t.context, t.negative) for t in batch
            ]
            scores = scorer.forward(pairs)
            loss = _pairwise_loss(scores[: len(batch)], scores[len(batch) :], settings.loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(
                [*scorer.encoder.parameters(), *scorer.head.parameters()], 1.0
            )
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(batch)
        loss_per_epoch.append(total / len(train))
    train_seconds = time.perf_counter() - started
    scorer.eval()

    accuracy, by_degradation = _accuracy(scorer, heldout, batch_size=eval_batch)
    out_dir = Path(out_dir).expanduser().resolve()
    record = TrainingRecord(
        encoder=settings.encoder_id(),
        loss=settings.loss,
        epochs=settings.epochs,
        train_triplets=len(train),
        heldout_triplets=len(heldout),
        triplets_by_degradation=dict(sorted(Counter(t.degradation for t in triplets).items())),
        loss_per_epoch=loss_per_epoch,
        heldout_accuracy=accuracy,
        heldout_accuracy_by_degradation=by_degradation,
        heldout_accuracy_before=accuracy_before,
        train_seconds=train_seconds,
        model_dir=str(out_dir),
    )
    _save_atomically(scorer, out_dir, settings=settings, record=record)
    return scorer, record


def _save_atomically(
    scorer: QueryScorer, out_dir: Path, *, settings: ScorerSettings, record: TrainingRecord
) -> None:
    """Write into a temporary sibling, then rename over `out_dir`: readers see old or new."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:12]
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{tag}")
    old = out_dir.with_name(f".{out_dir.name}.old-{tag}")
    meta = {
        "pooling": "mean",
        "settings": settings.model_dump(mode="json"),
        "record": record.model_dump(mode="json"),
    }
    try:
        scorer.save(tmp, meta=meta)
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


# ---- process-wide cache ------------------------------------------------------------------------
_SCORERS: dict[tuple[str, str], tuple[int, QueryScorer]] = {}
_SCORERS_LOCK = threading.Lock()


def load_scorer(model_dir: Path | str, *, device: str = "cpu") -> QueryScorer:
    """The process-wide QueryScorer of `model_dir`, loaded once; reloaded when scorer.json
    changes (a retrained model replaced the folder)."""
    resolved = Path(model_dir).expanduser().resolve()
    meta_path = resolved / SCORER_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{resolved} holds no trained query scorer ({SCORER_FILE} is missing); "
            "materialize augcon/query_scorer to train one"
        )
    mtime = meta_path.stat().st_mtime_ns
    key = (str(resolved), device)
    with _SCORERS_LOCK:
        cached = _SCORERS.get(key)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        # Replacing the entry drops the stale model instead of keeping both in memory.
        scorer = QueryScorer.load(resolved, device=device)
        _SCORERS[key] = (mtime, scorer)
        return scorer
