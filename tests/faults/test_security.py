"""Security: the server API key never reaches run logs, metadata or compute logs; tags named
like paths stay inside the data directory, and path-like partition keys are refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from condor_dagster.core.tag_ids import PARTITION_KEY_PATTERN
from condor_dagster.methods.condor.assets import CONDOR_ASSETS, TAG_ASSETS
from condor_dagster.methods.condor.taxonomy import PATH_TEXT_SEPARATOR, load_taxonomy
from condor_dagster.methods.corpus.resource import CorpusResource
from condor_dagster.methods.dataset import DATASET_ASSETS, sft_dataset
from condor_dagster.resources.embeddings import SentenceTransformerEmbeddings
from condor_dagster.resources.parquet_io import ParquetIOManager
from condor_dagster.resources.query_scorer import QueryScorerResource
from condor_dagster.resources.scripted_llm import ScriptedLLMResource, ScriptRule
from condor_dagster.resources.vllm_server_process import VLLMServerProcess

from .conftest import Deployment

SECRET = "sk-condor-fault-test-7f3a9c"


def files_under(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.server
def test_api_key_never_appears_in_event_log_metadata_or_compute_logs(
    deployment: Deployment, vllm_server: VLLMServerProcess
) -> None:
    (key,) = deployment.grow_tree(["Pets"])
    deployment.use_server(vllm_server)
    config = {"ops": {"condor__raw_questions": {"config": {"max_tokens": 64}}}}
    worker = deployment.start_worker([key], config, name="with-key", env={"VLLM_API_KEY": SECRET})
    assert worker.wait(timeout_s=240) == 0, worker.tail()
    (run,) = deployment.runs()
    assert run.status == dg.DagsterRunStatus.SUCCESS
    (event,) = deployment.materializations(run.run_id, "raw_questions")
    assert event.metadata["requests"].value == 7  # the server really generated

    # Every event record of every run on the instance (materialization metadata included),
    # and the run itself (config, tags), as the UI and GraphQL serve them.
    instance = deployment.instance
    records = [entry for r in instance.get_runs() for entry in instance.all_logs(r.run_id)]
    assert len(records) > 10
    for entry in records:
        assert SECRET not in dg.serialize_value(entry), entry
    for stored in instance.get_runs():
        assert SECRET not in dg.serialize_value(stored)

    # Every byte the deployment wrote: the instance's SQLite files and compute logs, the data
    # (Parquet, response cache) and the worker's own stdout/stderr.
    written = files_under(deployment.root)
    compute_logs = [p for p in written if "compute_logs" in p.parts]
    assert compute_logs, sorted(str(p) for p in written)
    # The search reads real text: the run id and the asset's log lines are found.
    assert any(run.run_id.encode() in data for data in written.values())
    assert any(b"raw_questions: 7 requests" in written[p] for p in compute_logs)
    leaks = [str(p) for p, data in written.items() if SECRET.encode() in data]
    assert leaks == []


PATH_LIKE = ["../../etc", "/abs/path", "a/b", "back\\slash", "C:\\Windows\\System32"]


def test_tags_named_like_paths_stay_inside_the_data_directory(deployment: Deployment) -> None:
    # JSON strings are YAML double-quoted scalars: the names arrive exactly as written.
    custom = "".join(f"      - {json.dumps(name)}\n" for name in PATH_LIKE)
    taxonomy = f"version: 1\nroots:\n  - name: Security\n    custom:\n{custom}"
    keys = deployment.grow_tree(taxonomy=taxonomy)
    assert len(keys) == len(PATH_LIKE)
    assert all(PARTITION_KEY_PATTERN.match(k) for k in keys), keys

    llm = ScriptedLLMResource(
        rules=[
            ScriptRule(
                pattern="three questions",
                response='{"easy": "Which tool suits {seed}?", "medium": "How to plan {seed}?", '
                '"hard": "Why does {seed} fail under load?"}',
            )
        ],
        cache_path=str(deployment.cache_path),
    )
    resources = {
        "llm": llm,
        "embeddings": SentenceTransformerEmbeddings(),
        "io_manager": ParquetIOManager(base_dir=str(deployment.assets_dir)),
        "corpus": CorpusResource(),
        "query_scorer": QueryScorerResource(),
    }
    tagged = dg.materialize(
        CONDOR_ASSETS,
        selection=TAG_ASSETS,
        resources=resources,
        instance=deployment.instance,
        tags={
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1],
        },
    )
    assert tagged.success
    exported = dg.materialize(
        DATASET_ASSETS,
        selection=[sft_dataset],
        resources=resources,
        instance=deployment.instance,
    )
    assert exported.success

    # The names live on as data, never as paths.
    questions = pl.concat(
        pl.read_parquet(deployment.assets_dir / "condor" / "raw_questions" / f"{k}.parquet")
        for k in keys
    )
    assert sorted(questions["origin"].struct.field("tag_path").unique().to_list()) == sorted(
        PATH_TEXT_SEPARATOR.join(["Security", name]) for name in PATH_LIKE
    )
    # Every file is where the layout says: assets/condor/<asset>/<tag id>.parquet,
    # assets/<asset key>.parquet, exports/..., or the response cache.
    expected = re.compile(
        r"assets/(condor/knowledge_tree|sft_dataset)\.parquet"
        r"|assets/condor/(raw_questions|deduplicated_questions|draft_answers|refined_answers"
        r"|refine_quality|sft_candidates)/"
        rf"({'|'.join(re.escape(k) for k in keys)})\.parquet"
        r"|exports/([^/]+|condor/[^/]+)|llm_cache\.sqlite3(-wal|-shm)?"
    )
    data_files = [str(p.relative_to(deployment.data)) for p in files_under(deployment.data)]
    assert len(data_files) > 4 * len(keys)
    assert [f for f in data_files if not expected.fullmatch(f)] == []
    outside = [
        str(p.relative_to(deployment.root))
        for p in files_under(deployment.root)
        if not p.is_relative_to(deployment.data) and not p.is_relative_to(deployment.home)
    ]
    assert outside == ["taxonomy.yaml"]
    for escaped in ("/etc.parquet", "/abs", "/abs/path.parquet", "/a/b.parquet"):
        assert not Path(escaped).exists()


def test_name_that_is_only_dots_is_refused_by_the_taxonomy(tmp_path: Path) -> None:
    path = tmp_path / "taxonomy.yaml"
    path.write_text('version: 1\nroots:\n  - name: Security\n    custom: [".."]\n')
    with pytest.raises(ValueError, match=r"roots\[0\]\.custom\[0\]: name '\.\.' is empty"):
        load_taxonomy(str(path))


@pytest.mark.parametrize(
    "key", ["../../etc", "..", "/abs/path", "a/b", "a\\b", "C:\\Windows", ".hidden", "Upper"]
)
def test_path_like_partition_key_is_refused_by_the_io_manager(tmp_path: Path, key: str) -> None:
    base = tmp_path / "root" / "data" / "assets"
    io = ParquetIOManager(base_dir=str(base))
    frame = pl.DataFrame({"a": [1]})
    asset = dg.AssetKey("raw_questions")
    refused = (
        f"partition key {re.escape(repr(key))} of asset raw_questions cannot be stored as a "
        r"file: .* tag partition keys come from condor_dagster\.core\.tag_ids\.node_id\(path\)"
    )
    with pytest.raises(ValueError, match=refused):
        io.handle_output(dg.build_output_context(asset_key=asset, partition_key=key), frame)
    with pytest.raises(ValueError, match=refused):
        io.load_input(dg.build_input_context(asset_key=asset, partition_key=key))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_asset_key_of_dot_dot_parts_cannot_leave_the_io_manager_base(tmp_path: Path) -> None:
    io = ParquetIOManager(base_dir=str(tmp_path / "root" / "data" / "assets"))
    escaping = dg.AssetKey(["..", "..", "etc"])
    with pytest.raises(ValueError, match="outside the IO manager base"):
        io.handle_output(dg.build_output_context(asset_key=escaping), pl.DataFrame({"a": [1]}))
    with pytest.raises(ValueError, match="outside the IO manager base"):
        io.load_input(dg.build_input_context(asset_key=escaping))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
