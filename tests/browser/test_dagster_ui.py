"""What a user sees in the Dagster UI, in headless Chromium: the asset graph, raw_questions' tag
partitions with their status, and a materialization's metadata (row counts, preview).

The data behind the webserver was materialized for real (see conftest.py): three tag partitions,
raw_questions generated for the first two by the tiny model on a real `vllm serve`.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from .conftest import FIRST_LOAD_TIMEOUT_MS, DagsterUI, Screen

pytestmark = pytest.mark.server

GRAPH_ASSETS = [
    "knowledge_tree",
    "raw_questions",
    "deduplicated_questions",
    "draft_answers",
    "refined_answers",
    "sft_candidates",
    "sft_dataset",
]
AUGCON_GRAPH_ASSETS = ["documents", "context_tree", "query_scorer", "grounded_answers"]


def visible_text(screen: Screen, text: str):
    # The UI renders some labels twice (one copy hidden, for measuring); look at the shown one.
    return screen.page.get_by_text(text, exact=True).filter(visible=True).first


def metadata_row(screen: Screen, name: str):
    """The row of a metadata table whose key is `name`."""
    page = screen.page
    return page.get_by_role("row").filter(has=page.get_by_text(name, exact=True)).first


def expect_metadata_value(screen: Screen, name: str, value: object) -> None:
    """The row reads exactly `name  value` (not merely containing the digits)."""
    pattern = rf"^\s*{re.escape(name)}\s*{re.escape(str(value))}\s*$"
    expect(metadata_row(screen, name)).to_have_text(re.compile(pattern))


def test_asset_graph_shows_the_condor_assets_and_sft_dataset(dagster_ui: DagsterUI, screen: Screen):
    page = screen.page
    # Wide enough that the whole graph fits at a zoom where nodes show full names (below 0.6
    # the UI draws small nodes with names cut in the middle).
    # AugCon's nine-wide group beside Condor's needs a 4K page for that zoom.
    page.set_viewport_size({"width": 3840, "height": 2160})
    page.goto(f"{dagster_ui.url}/asset-groups")
    with screen.explained("the global asset lineage page"):
        expect(page.get_by_text("Global asset lineage")).to_be_visible(
            timeout=FIRST_LOAD_TIMEOUT_MS
        )
        # Groups start collapsed; open them as a user does, from the graph's settings menu.
        page.get_by_role("button", name="settings", exact=True).click()
        page.get_by_role("menuitem", name="Expand all groups").click()
        page.keyboard.press("Escape")
        for group in ("condor", "augcon", "corpus", "export"):
            expect(visible_text(screen, group)).to_be_visible()
        for asset in (*GRAPH_ASSETS, *AUGCON_GRAPH_ASSETS):
            expect(visible_text(screen, asset)).to_be_visible()
        # raw_questions' node reports its partitions: 2 of the 3 tags have data (66%).
        filled = 100 * len(dagster_ui.materialized) // len(dagster_ui.tags)
        expect(page.get_by_text(f"{filled}% filled")).to_be_visible()
    screen.screenshot()


def test_raw_questions_partitions_show_their_status(dagster_ui: DagsterUI, screen: Screen):
    page = screen.page
    page.goto(f"{dagster_ui.url}/assets/condor/raw_questions?view=partitions")
    n_done, n_missing = len(dagster_ui.materialized), len(dagster_ui.missing)
    with screen.explained("raw_questions' Partitions tab"):
        expect(page.get_by_text(f"{len(dagster_ui.tags)} Partitions Selected")).to_be_visible(
            timeout=FIRST_LOAD_TIMEOUT_MS
        )
        expect(page.get_by_text(f"Materialized ({n_done})", exact=True)).to_be_visible()
        expect(page.get_by_text(f"Missing ({n_missing})", exact=True)).to_be_visible()
        expect(page.get_by_text("Failed (0)", exact=True)).to_be_visible()
        for key in dagster_ui.tags:
            expect(visible_text(screen, key)).to_be_visible()

        # Status per partition: hiding the materialized ones leaves exactly the missing tag.
        page.get_by_text(f"Materialized ({n_done})", exact=True).click()
        for key in dagster_ui.materialized:
            expect(page.get_by_text(key, exact=True)).to_have_count(0)
        for key in dagster_ui.missing:
            expect(visible_text(screen, key)).to_be_visible()
    screen.screenshot("missing-only")

    with screen.explained("a materialized partition's details"):
        page.get_by_text(f"Materialized ({n_done})", exact=True).click()
        page.get_by_text(f"Missing ({n_missing})", exact=True).click()
        for key in dagster_ui.missing:
            expect(page.get_by_text(key, exact=True)).to_have_count(0)
        key = dagster_ui.materialized[0]
        visible_text(screen, key).click()
        # The detail pane names the partition and links its one materialization.
        expect(page.get_by_text("View all historical events (1)")).to_be_visible()
        expect_metadata_value(screen, "dagster/row_count", dagster_ui.raw_rows[key])
    screen.screenshot()


def test_materialization_metadata_shows_row_counts_and_preview(
    dagster_ui: DagsterUI, screen: Screen
):
    page = screen.page
    page.set_viewport_size({"width": 1600, "height": 2200})  # the whole metadata table
    key = dagster_ui.materialized[0]
    page.goto(f"{dagster_ui.url}/assets/condor/raw_questions?view=events")
    with screen.explained("raw_questions' Events tab"):
        event = visible_text(screen, key)
        expect(event).to_be_visible(timeout=FIRST_LOAD_TIMEOUT_MS)
        event.click()
        expect(
            page.get_by_text(re.compile(rf"Partition {re.escape(key)} materialized in run"))
        ).to_be_visible()

        # Rows in this partition's file, and the run's counts per partition.
        expect_metadata_value(screen, "dagster/row_count", dagster_ui.raw_rows[key])
        expect_metadata_value(screen, "partitions", len(dagster_ui.materialized))
        per_partition = metadata_row(screen, "rows_per_partition")
        for done in dagster_ui.materialized:
            expect(per_partition).to_contain_text(f'"{done}": {dagster_ui.raw_rows[done]}')
        # The preview is a rendered table: its header and the tag's path in a cell.
        preview = metadata_row(screen, "preview")
        for column in ("tag_path", "task", "difficulty", "text"):
            expect(preview.get_by_role("columnheader", name=column)).to_be_visible()
        expect(
            preview.get_by_role("cell", name=re.compile("Healthcare > Nutrition")).first
        ).to_be_visible()
        for name in ("requests", "completion_tokens", "kept", "dropped_by_reason"):
            expect(metadata_row(screen, name)).to_be_visible()
    screen.screenshot()
