"""The suggestions page and the names page of a big library, in a real (headless) browser.

Screenshots go to ``test-artifacts/suggestions_*.png`` (gitignored).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from identity_pipeline.clustering.cluster import arrow_table
from identity_pipeline.labeling import read_labels
from identity_pipeline.labeling.rejections import read_rejections, rejections_path
from identity_pipeline.labeling.state import clusters_table_path
from identity_pipeline.storage import DataLayout, atomic_write_table
from identity_pipeline_tests.conftest import CHROMIUM, CHROMIUM_ARGS, REPO_ROOT
from identity_pipeline_tests.test_suggestions import (
    face_id,
    library_table,
    name_cluster,
    serving,
    write_library,
)

ARTIFACTS = REPO_ROOT / "test-artifacts"

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None,
        reason="needs the playwright Python package",
    ),
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def test_confirm_and_reject_with_keys_and_clicks(tmp_path: Path, browser) -> None:
    from playwright.sync_api import expect

    layout = DataLayout(tmp_path / "data")
    write_library(layout)
    name_cluster(layout, 0, 4, "Anna")
    with serving(layout.root) as base:
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.set_default_timeout(15_000)
        page.goto(base + "/")
        page.get_by_test_id("to-suggestions").click()
        expect(page.get_by_role("heading", name="Is this Anna?")).to_be_visible()
        expect(page.get_by_test_id("examples").locator("img")).to_have_count(4)
        items = page.get_by_test_id("suggestion")
        expect(items).to_have_count(2)
        first_crop = items.first.locator("img").first
        expect(first_crop).to_have_js_property("complete", True)
        assert first_crop.evaluate("img => img.naturalWidth") == 128
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "suggestions_person.png"))

        # y: her split cluster (the best match, focused) is Anna; n: the stray face is not.
        assert items.first.get_attribute("data-group") == "3"
        with page.expect_response(lambda r: r.url.endswith("/answer") and r.ok):
            page.keyboard.press("y")
        expect(items).to_have_count(1)
        with page.expect_response(lambda r: r.url.endswith("/api/suggestions") and r.ok):
            page.keyboard.press("n")
        # Her queue is done: the page moves on to "Same person?" (Dora's two clusters).
        pairs = page.get_by_test_id("pair")
        expect(pairs).to_have_count(1)
        expect(page.get_by_test_id("suggestion")).to_have_count(0)
        page.keyboard.press("y")  # focuses the name field: a "yes" here needs a name
        expect(pairs.first.get_by_test_id("pair-name")).to_be_focused()
        page.keyboard.type("Dora")
        with page.expect_response(lambda r: r.url.endswith("/api/merge") and r.ok):
            page.keyboard.press("Enter")
        expect(page.get_by_test_id("pair")).to_have_count(0)
        page.screenshot(path=str(ARTIFACTS / "suggestions_done.png"))
        page.close()

    labels = read_labels(layout.labels_path)
    assert {labels.get(face_id(3, i)) for i in range(2)} == {"Anna"}
    assert labels.get(face_id(5, 0)) is None
    assert {labels.get(face_id(c, i)) for c in (6, 7) for i in range(2)} == {"Dora"}
    assert read_rejections(rejections_path(layout.labels_path)).is_not(face_id(5, 0), "Anna")


def test_yes_to_all_shown_after_clicking_no_on_a_stranger(tmp_path: Path, browser) -> None:
    from playwright.sync_api import expect

    layout = DataLayout(tmp_path / "data")
    # Anna split four ways, and a stranger (Carl) close enough to be asked about.
    library = [
        (0, "anna", 3, 0.85),
        (1, "anna", 2, 0.8),
        (2, "anna", 1, 0.7),
        (3, "anna", 1, 0.6),
        (4, "carl", 1, 0.9),
    ]
    write_library(layout, library=library)
    name_cluster(layout, 0, 3, "Anna")
    table = pd.read_parquet(clusters_table_path(layout))
    anna = np.stack(table["embedding"].iloc[:3]).mean(axis=0)
    carl = table["face_id"] == face_id(4, 0)
    vector = 0.5 * anna / np.linalg.norm(anna) + 0.8 * table.loc[carl, "embedding"].iloc[0]
    table.loc[carl, "embedding"] = pd.Series([vector.astype(np.float32)], index=table.index[carl])
    atomic_write_table(clusters_table_path(layout), arrow_table(table))

    with serving(layout.root) as base:
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.set_default_timeout(15_000)
        page.goto(base + "/suggestions")
        items = page.get_by_test_id("suggestion")
        expect(items).to_have_count(4)
        carl_item = page.locator('[data-testid=suggestion][data-group="4"]')
        with page.expect_response(lambda r: r.url.endswith("/answer") and r.ok):
            carl_item.get_by_test_id("no").click()
        expect(items).to_have_count(3)
        with page.expect_response(lambda r: r.url.endswith("/api/suggestions") and r.ok):
            page.get_by_test_id("yes-all").click()
        expect(page.get_by_test_id("empty")).to_be_visible()
        page.close()

    labels = read_labels(layout.labels_path)
    assert sorted(f for f, n in labels.names.items() if n == "Anna") == sorted(
        face_id(c, i) for c, n in ((0, 3), (1, 2), (2, 1), (3, 1)) for i in range(n)
    )
    assert read_rejections(rejections_path(layout.labels_path)).is_not(face_id(4, 0), "Anna")


def big_library(root: Path, clusters: int, singles: int) -> pd.DataFrame:
    """Many clusters of 6 faces and many faces alone, all with the same few drawn tiles."""
    small = library_table(root, library=[(0, "anna", 6, 0.8)])
    rows = []
    for cluster in range(clusters + singles):
        count = 6 if cluster < clusters else 1
        block = small.iloc[:count].copy()
        block["face_id"] = [f"k{cluster}x{i}" + "0" * 24 for i in range(count)]
        block["cluster_id"] = cluster
        block["cluster_size"] = count
        rows.append(block)
    big = pd.concat(rows, ignore_index=True)
    return big


def test_names_page_of_a_big_library_renders_only_what_is_near(tmp_path: Path, browser) -> None:
    from playwright.sync_api import expect

    layout = DataLayout(tmp_path / "data")
    table = big_library(layout.root, clusters=400, singles=1200)
    # One cluster of 300 faces: folded until "show all".
    table.loc[table["cluster_id"] < 50, "cluster_id"] = 0
    table["cluster_size"] = table["cluster_id"].map(table["cluster_id"].value_counts())
    atomic_write_table(clusters_table_path(layout), arrow_table(table))
    with serving(layout.root) as base:
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.set_default_timeout(15_000)
        page.goto(base + "/")
        page.wait_for_function("document.body.dataset.loaded === '1'")
        groups = page.get_by_test_id("group")
        expect(groups).to_have_count(1 + 350)
        biggest = groups.first
        expect(biggest.locator(".face")).to_have_count(36)
        expect(biggest.get_by_test_id("show-all")).to_have_text("Show all 300 faces")
        drawn = page.locator(".face").count()
        assert drawn < 600, f"{drawn} face tiles drawn for {len(table)} faces"

        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        expect(page.get_by_test_id("singletons").locator(".face").last).to_be_visible()
        assert biggest.locator(".face").count() == 0, "far above the screen: emptied"
        assert page.locator(".face").count() < 1000
        page.evaluate("window.scrollTo(0, 0)")
        biggest.get_by_test_id("show-all").click()
        expect(biggest.locator(".face")).to_have_count(300)
        page.close()
