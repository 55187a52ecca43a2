"""The run worker killed with SIGKILL mid-generation: no partition file is half-written, the run
is not a success, and a new run of the same partitions resumes from the response cache.

The worker is `dagster job execute` of the project's definitions with the server LLM
(CONDOR_LLM=server) against the session's real `vllm serve`, on an instance on disk.
"""

from __future__ import annotations

import dagster as dg
import pytest

from condor_dagster.resources.vllm_server_process import VLLMServerProcess

from .conftest import (
    TASKS_X_DIFFICULTIES,
    Deployment,
    check_parquet_files,
    temporary_files,
    wait_until,
)

# 4 tags x 7 tasks x 16 samples = 448 requests of up to 256 tokens: ~25 s of generation on the
# tiny model on a quiet machine (112 took ~6 s, too short to kill reliably mid-run), while the
# cache fills every couple of seconds.
SAMPLES = 16
RUN_CONFIG = {
    "ops": {"condor__raw_questions": {"config": {"samples_per_task": SAMPLES, "max_tokens": 256}}}
}


@pytest.mark.server
def test_sigkill_mid_generation_leaves_no_partial_file_and_rerun_resumes(
    deployment: Deployment, vllm_server: VLLMServerProcess
) -> None:
    keys = deployment.grow_tree(["Pets", "Travel", "Finance", "Art"])
    total = len(keys) * 7 * SAMPLES
    deployment.use_server(vllm_server)
    first = deployment.start_worker(keys, RUN_CONFIG, name="killed")

    # Kill once some completions are saved and before the step has finished.
    wait_until(
        lambda: deployment.cache_count() > 0 or not first.alive(),
        timeout_s=300,
        what="the first completions in the response cache",
        tail=lambda: first.tail() + "\n" + vllm_server.log_tail(),
    )
    assert first.alive(), f"the run ended before it could be killed\n{first.tail()}"
    first.kill()
    saved = deployment.cache_count()
    assert 0 < saved < total, (saved, total)

    # Nothing half-written: the only Parquet file is the tree, and it reads back whole.
    assert check_parquet_files(deployment.data) == {
        "assets/condor/knowledge_tree.parquet": len(keys)
    }
    assert temporary_files(deployment.data) == []
    (killed,) = deployment.runs()
    assert killed.status != dg.DagsterRunStatus.SUCCESS
    assert deployment.materializations(killed.run_id, "raw_questions") == []

    # A new run of the same partitions (what "re-execute" does) resumes from the cache.
    second = deployment.start_worker(keys, RUN_CONFIG, name="rerun")
    assert second.wait(timeout_s=300) == 0, second.tail()
    resumed = deployment.runs()[-1]
    assert resumed.run_id != killed.run_id
    assert resumed.status == dg.DagsterRunStatus.SUCCESS
    events = deployment.materializations(resumed.run_id, "raw_questions")
    assert sorted(str(e.partition) for e in events) == sorted(keys)
    for event in events:
        assert event.metadata["cache_hits"].value == saved
        assert event.metadata["cache_misses"].value == total - saved
        assert event.metadata["requests"].value == total
    assert deployment.cache_count() == total

    rows = check_parquet_files(deployment.data)
    assert rows == {
        "assets/condor/knowledge_tree.parquet": len(keys),
        **{
            f"assets/condor/raw_questions/{key}.parquet": TASKS_X_DIFFICULTIES * SAMPLES
            for key in keys
        },
    }
    assert temporary_files(deployment.data) == []
