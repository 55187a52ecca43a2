"""AugCon's query scorer: trained on scripted triplets whose negatives really are worse (vague
questions against specific ones), it separates held-out pairs far above chance, saves
atomically and reloads to the same scores."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from condor_dagster.methods.augcon.scorer import (
    SCORER_FILE,
    VALUE_HEAD_FILE,
    QueryScorer,
    ScorerSettings,
    TrainingRecord,
    Triplet,
    fit_scorer,
    load_scorer,
    split_triplets,
    train_scorer,
)

# ---- scripted triplets -------------------------------------------------------------------------
# Each template: a context and a question the context answers, over slots filled from pools.
TEMPLATES: list[tuple[str, str]] = [
    (
        "The {name} river flows {n} kilometres through {place} before it reaches the {sea}.",
        "How many kilometres does the {name} river flow through {place}?",
    ),
    (
        "In {year}, the chemist {person} isolated {element} by heating its oxide with {agent}.",
        "What did {person} heat the oxide of {element} with in {year}?",
    ),
    (
        "The town of {place} holds a {food} festival every {month}, drawing about {n} visitors.",
        "In which month does {place} hold its {food} festival?",
    ),
    (
        "{person}'s novel about a {job} in {place} sold {n} copies in its first year.",
        "How many copies did {person}'s novel about a {job} sell in its first year?",
    ),
    (
        "A {animal} can run at {n} kilometres per hour, fast enough to escape most {predator}s.",
        "How fast can a {animal} run in kilometres per hour?",
    ),
    (
        "The {name} bridge, opened in {year}, spans {n} metres across the harbour of {place}.",
        "In what year was the {name} bridge in {place} opened?",
    ),
    (
        "To repair a {device}, first disconnect the {part}, then replace the worn {part2}.",
        "What should be disconnected first when repairing a {device}?",
    ),
    (
        "The {team} won the {year} championship after {person} scored in the final minute.",
        "Who scored in the final minute for the {team} in the {year} championship?",
    ),
]

POOLS: dict[str, list[str]] = {
    "name": ["Varna", "Oskel", "Tiber", "Morava", "Ebro", "Kuma", "Lenta", "Arvi", "Soren"],
    "place": ["Portugal", "Kenya", "Ontario", "Bavaria", "Chile", "Norway", "Laos", "Peru"],
    "sea": ["Black Sea", "Atlantic", "Baltic", "Caspian Sea", "Adriatic", "Red Sea"],
    "year": ["1808", "1825", "1886", "1901", "1937", "1962", "1988", "2004"],
    "person": ["Marie Duval", "Ken Ito", "Ada Brook", "Luis Ortega", "Nia Okafor", "Jan Berg"],
    "element": ["sodium", "potassium", "calcium", "barium", "magnesium", "lithium"],
    "agent": ["carbon", "charcoal", "aluminium powder", "hydrogen gas", "iron filings"],
    "food": ["cheese", "chestnut", "oyster", "pepper", "honey", "apple", "bread"],
    "month": ["March", "April", "June", "August", "October", "December"],
    "job": ["lighthouse keeper", "baker", "surgeon", "pilot", "teacher", "miner"],
    "animal": ["cheetah", "pronghorn", "springbok", "hare", "ostrich", "greyhound"],
    "predator": ["lion", "wolf", "hyena", "eagle", "leopard"],
    "device": ["bicycle brake", "washing machine", "lawn mower", "ceiling fan", "kettle"],
    "part": ["power cable", "battery", "water hose", "spark plug lead", "fuel line"],
    "part2": ["belt", "gasket", "pad", "bearing", "filter"],
    "team": ["Harbor Hawks", "Valley Foxes", "River Kings", "North Stars", "Iron Owls"],
}

# Degraded prompts give vague, context-free questions; a different pool per degradation.
VAGUE: dict[str, list[str]] = {
    "vague_instruction": ["What is this about?", "Can you tell me more?", "Explain the text."],
    "one_example": ["What happened?", "Why is this important?", "What does it say?"],
    "both": ["Tell me something.", "Any thoughts?", "What else is there?"],
}
DEGRADATIONS = list(VAGUE)


def _fill(template: str, slots: dict[str, str]) -> str:
    return template.format(**slots)


def scripted_triplets(n_contexts: int, *, seed: int = 0) -> list[Triplet]:
    """One triplet per context; degradations cycle so every label is well represented."""
    rng = random.Random(seed)
    triplets: list[Triplet] = []
    seen: set[str] = set()
    templates = itertools.cycle(TEMPLATES)
    while len(triplets) < n_contexts:
        context_t, question_t = next(templates)
        slots = {key: rng.choice(pool) for key, pool in POOLS.items()}
        slots["n"] = str(rng.randint(3, 5000))
        context = _fill(context_t, slots)
        if context in seen:
            continue
        seen.add(context)
        degradation = DEGRADATIONS[len(triplets) % len(DEGRADATIONS)]
        triplets.append(
            Triplet(
                context=context,
                positive=_fill(question_t, slots),
                negative=rng.choice(VAGUE[degradation]),
                degradation=degradation,  # type: ignore[arg-type]
            )
        )
    return triplets


N_CONTEXTS = 120
# The defaults: the test checks the settings a pipeline run would use.
SETTINGS = ScorerSettings()


@pytest.fixture(scope="module")
def triplets() -> list[Triplet]:
    return scripted_triplets(N_CONTEXTS)


@pytest.fixture(scope="module")
def trained(
    triplets: list[Triplet], tmp_path_factory: pytest.TempPathFactory
) -> tuple[QueryScorer, TrainingRecord, Path]:
    out_dir = tmp_path_factory.mktemp("scorer") / "query_scorer"
    scorer, record = fit_scorer(triplets, settings=SETTINGS, out_dir=out_dir)
    return scorer, record, out_dir


# ---- training ----------------------------------------------------------------------------------
def test_training_separates_heldout_pairs(
    trained: tuple[QueryScorer, TrainingRecord, Path],
) -> None:
    _, record, out_dir = trained
    assert record.heldout_accuracy >= 0.85, record
    assert record.heldout_accuracy > record.heldout_accuracy_before, record
    assert len(record.loss_per_epoch) == SETTINGS.epochs
    assert all(b < a for a, b in itertools.pairwise(record.loss_per_epoch)), record
    assert set(record.heldout_accuracy_by_degradation) == set(DEGRADATIONS)
    assert record.encoder == "all-MiniLM-L6-v2"
    assert record.loss == "bradley_terry"
    assert record.model_dir == str(out_dir.resolve())
    assert record.train_seconds > 0


def test_record_counts(
    triplets: list[Triplet], trained: tuple[QueryScorer, TrainingRecord, Path]
) -> None:
    _, record, _ = trained
    assert record.train_triplets + record.heldout_triplets == N_CONTEXTS
    assert record.heldout_triplets == round(SETTINGS.heldout_fraction * N_CONTEXTS)
    assert record.triplets_by_degradation == {label: N_CONTEXTS // 3 for label in DEGRADATIONS}


def test_saved_folder_reloads_to_the_same_scores(
    trained: tuple[QueryScorer, TrainingRecord, Path],
) -> None:
    scorer, record, out_dir = trained
    for name in (SCORER_FILE, VALUE_HEAD_FILE, "config.json", "model.safetensors"):
        assert (out_dir / name).is_file(), name
    # Atomic save: only the final folder is left, no temporary or displaced sibling.
    assert [p.name for p in out_dir.parent.iterdir()] == [out_dir.name]
    meta = json.loads((out_dir / SCORER_FILE).read_text())
    assert TrainingRecord.model_validate(meta["record"]) == record
    assert ScorerSettings.model_validate(meta["settings"]) == SETTINGS

    fresh = QueryScorer.load(out_dir)
    context = (
        "The Quilla glacier lost 42 metres of ice in 2019, the fastest retreat measured "
        "in the Andes that decade."
    )
    pairs = [
        (context, "How many metres of ice did the Quilla glacier lose in 2019?"),
        (context, "What is this about?"),
        (context, "Can you tell me more?"),
        (context, "In which mountain range is the Quilla glacier?"),
    ]
    expected = scorer.score(pairs)
    got = fresh.score(pairs, batch_size=3)
    assert got == pytest.approx(expected, abs=1e-5)
    assert got[0] > got[1] and got[0] > got[2]
    assert got[3] > got[1] and got[3] > got[2]


def test_empty_and_cached(trained: tuple[QueryScorer, TrainingRecord, Path]) -> None:
    _, _, out_dir = trained
    scorer = load_scorer(out_dir)
    assert load_scorer(str(out_dir)) is scorer
    assert scorer.score([]) == []


def test_a_question_is_never_truncated(trained: tuple[QueryScorer, TrainingRecord, Path]) -> None:
    scorer, _, _ = trained
    long_context = " ".join(["The harbour wall was rebuilt in stone."] * 200)
    question = "Which material was the harbour wall rebuilt in? " * 30  # ~300 tokens
    encoded = scorer._encode([(long_context, question)])
    ids = encoded["input_ids"][0].tolist()
    question_ids = scorer.tokenizer(question, add_special_tokens=False)["input_ids"]
    # The pair ends with the whole question followed by [SEP].
    assert ids[-len(question_ids) - 1 : -1] == question_ids
    assert len(ids) > SETTINGS.max_length  # the budget widened rather than cutting the question


def test_mean_difference_loss_trains(triplets: list[Triplet], tmp_path: Path) -> None:
    settings = ScorerSettings(loss="mean_difference", epochs=1, seed=1)
    record = train_scorer(triplets[:60], settings=settings, out_dir=tmp_path / "md")
    assert record.loss == "mean_difference"
    assert record.heldout_accuracy > 0.6, record
    assert (tmp_path / "md" / SCORER_FILE).is_file()


# ---- splitting and errors ----------------------------------------------------------------------
def test_split_is_by_context_deterministic_and_stratified(triplets: list[Triplet]) -> None:
    # A second triplet per context: the same context must stay on one side.
    doubled = triplets + [
        t.model_copy(update={"negative": "Is there anything else?"}) for t in triplets
    ]
    train, heldout = split_triplets(doubled, heldout_fraction=0.2)
    assert not {t.context for t in train} & {t.context for t in heldout}
    shuffled = list(reversed(doubled))
    assert split_triplets(shuffled, heldout_fraction=0.2) == (train, heldout)
    for label in DEGRADATIONS:
        held = sum(t.degradation == label for t in heldout) // 2
        assert held == 8, (label, held)  # 20% of the 40 contexts of each label


def test_too_few_triplets(triplets: list[Triplet], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"at least 4 triplets, got 3; generate more"):
        train_scorer(triplets[:3], settings=SETTINGS, out_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_empty_split(triplets: list[Triplet], tmp_path: Path) -> None:
    # Four triplets on one context: whichever side it lands on, the other side is empty.
    one_context = [
        t.model_copy(update={"context": triplets[0].context, "positive": f"{t.positive} {i}"})
        for i, t in enumerate(triplets[:4])
    ]
    with pytest.raises(ValueError, match=r"split is empty.*(lower|raise) heldout_fraction"):
        train_scorer(one_context, settings=SETTINGS, out_dir=tmp_path / "x")
    with pytest.raises(ValueError, match=r"training split is empty.*lower heldout_fraction"):
        train_scorer(
            one_context,
            settings=ScorerSettings(heldout_fraction=0.5),
            out_dir=tmp_path / "x",
        )
    # Five contexts at 5%: round(0.25) holds none out.
    with pytest.raises(ValueError, match=r"held-out split is empty: 5 triplets over 5 contexts"):
        train_scorer(
            triplets[:5],
            settings=ScorerSettings(heldout_fraction=0.05),
            out_dir=tmp_path / "x",
        )


def test_settings_and_triplet_validation(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"heldout_fraction must be in \(0, 0.5\], got 0.9"):
        ScorerSettings(heldout_fraction=0.9)
    with pytest.raises(ValidationError, match="not a Hugging Face model folder"):
        ScorerSettings(encoder=str(tmp_path))
    with pytest.raises(ValidationError, match="must be at least 1, got 0"):
        ScorerSettings(epochs=0)
    with pytest.raises(ValidationError, match="same question"):
        Triplet(context="c", positive="Why?", negative=" Why? ", degradation="both")
    with pytest.raises(ValidationError, match="degradation"):
        Triplet(context="c", positive="a", negative="b", degradation="other")  # type: ignore[arg-type]


def test_missing_model_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"materialize augcon/query_scorer"):
        QueryScorer.load(tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_scorer(tmp_path)


# ---- the Dagster resource ----------------------------------------------------------------------
def test_resource_scores_through_the_shared_model(
    trained: tuple[QueryScorer, TrainingRecord, Path],
) -> None:
    from condor_dagster.resources.query_scorer import QueryScorerResource

    scorer, _, out_dir = trained
    resource = QueryScorerResource(batch_size=2, threads=1)
    pairs = [("The Ebro flows 910 kilometres.", "How long is the Ebro?")] * 3
    assert resource.score(str(out_dir), pairs) == pytest.approx(scorer.score(pairs), abs=1e-5)
    assert resource.score(str(out_dir), []) == []
    with pytest.raises(ValidationError, match="not one of cpu"):
        QueryScorerResource(device="gpu")
