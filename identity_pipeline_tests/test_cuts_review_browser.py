"""The cuts review page end to end, in headless Chromium: fix a wrong split, and photo_tiles
re-cuts that photo.

An album of three photos is materialized in-process (raw_photos, photo_tiles); the labeling app
serves the page over the same storage root. On the page a person opens the collage whose true
tiles are known, lays a 2 x 1 grid, drags its cut to the true seam, cuts the bottom tile where
its two photos meet (nudging both lines to the pixel with the arrow keys), checks that single /
undo and adding / removing a cut work by key and by mouse, saves with one key, and accepts the
next photo with one key. Then the
album sensor ticks as the daemon would: it asks for that album's photo_tiles only, and running
that request gives the collage exactly its true tiles while the other photos come from the cache.

Screenshot: ``test-artifacts/cuts_review.png`` (gitignored).
"""

from __future__ import annotations

import importlib.util
import json
import urllib.request

import dagster as dg
import pandas as pd
import pytest
from PIL import Image
from skimage import data

from identity_pipeline.collage.boxes import Box
from identity_pipeline.collage.synthetic import compose_collage, grid_layout, rows_layout
from identity_pipeline.labeling.accepted_cuts import accepted_cuts_path, read_accepted_cuts
from identity_pipeline.resources import StorageResource
from identity_pipeline.sensors import album_sensor
from identity_pipeline.storage import DataLayout
from identity_pipeline_tests.conftest import CHROMIUM, CHROMIUM_ARGS, materialize_graph
from identity_pipeline_tests.test_labeling import serving
from identity_pipeline_tests.test_ui_browser import ARTIFACTS

ALBUM = "trip"

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None,
        reason="needs the playwright Python package",
    ),
]


def make_album(layout: DataLayout) -> list[Box]:
    """Three photos; returns the true tiles of ``rows.jpg``: one photo over two, no borders."""
    folder = layout.album_dir(ALBUM)
    folder.mkdir(parents=True)
    photos = [Image.fromarray(a) for a in (data.astronaut(), data.chelsea(), data.coffee())]
    rows = compose_collage(photos, rows_layout([1, 2], (1.0, 1.3)), (900, 700), seed=5)
    rows.image.save(folder / "rows.jpg", quality=92)
    grid = compose_collage(
        [*photos, Image.fromarray(data.rocket())], grid_layout(2, 2), (800, 800), 14, 14, seed=2
    )
    grid.image.save(folder / "grid.jpg", quality=92)
    photos[0].save(folder / "portrait.png")
    return sorted(rows.boxes, key=lambda b: (b.y0, b.x0))


def sensor_tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    """One tick of the album sensor, its new partitions applied as the daemon would."""
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"storage": StorageResource()}
    )
    result = album_sensor(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def run_request(layout: DataLayout, instance, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    """What the daemon does with a run request: materialize its selection for its partition."""
    selection = [key.to_user_string() for key in request.asset_selection or []]
    result = materialize_graph(layout, instance, selection, request.partition_key)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return result


def photo_order(tiles: pd.DataFrame) -> list[str]:
    """Least sure first: the lowest confidence of each photo's rows, then its path."""
    per_photo = tiles.groupby("photo_id").agg(
        confidence=("confidence", "min"), path=("source_path", "first")
    )
    return list(per_photo.sort_values(["confidence", "path"]).index)


def test_fix_a_wrong_split_on_the_page_and_photo_tiles_recuts_it(
    layout: DataLayout, instance: dg.DagsterInstance
) -> None:
    from playwright.sync_api import expect, sync_playwright

    truth = make_album(layout)
    first = sensor_tick(instance, None)
    assert [r.asset_selection for r in first.run_requests] == [[dg.AssetKey("raw_photos")]]
    # The run it asks for, and photo_tiles after it (automation follows raw_photos).
    assert materialize_graph(layout, instance, ["raw_photos", "photo_tiles"], ALBUM).success
    tiles = pd.read_parquet(layout.table_path("photo_tiles", ALBUM))
    rows_id = tiles.loc[tiles["source_path"] == "rows.jpg", "photo_id"].iat[0]

    with serving(layout.root) as base:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 950})
                page.set_default_timeout(15_000)
                errors: list[str] = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.goto(base + "/")
                page.get_by_test_id("nav-cuts").click()  # from the Names page
                expect(page.locator("body[data-loaded]")).to_have_count(1)
                items = page.get_by_test_id("queue-item")
                expect(items).to_have_count(3)
                assert [items.nth(i).get_attribute("data-photo") for i in range(3)] == photo_order(
                    tiles
                )

                page.locator(f'[data-testid=queue-item][data-photo="{rows_id}"]').click()
                editor = page.locator("#editor")
                expect(editor).to_have_attribute("data-photo", rows_id)
                expect(page.get_by_test_id("photo")).to_have_js_property("complete", True)
                expect(page.get_by_test_id("info")).to_contain_text("rows.jpg")

                # Single, then undo: back to what the splitter said.
                page.keyboard.press("s")
                expect(editor).to_have_attribute("data-tiles", "1")
                page.keyboard.press("z")
                expect(editor).to_have_attribute(
                    "data-tiles", str((tiles["photo_id"] == rows_id).sum())
                )

                # A known start whatever the splitter did: rows x cols = 2 x 1.
                page.get_by_test_id("rows").fill("2")
                page.get_by_test_id("cols").fill("1")
                page.get_by_test_id("grid").click()
                expect(editor).to_have_attribute("data-tiles", "2")
                expect(page.get_by_test_id("accept")).to_have_text("Save fix (A)")

                seam_y, seam_x = truth[0].y1, truth[1].x1
                overlay = page.get_by_test_id("overlay").bounding_box()
                to_x = lambda x: overlay["x"] + x * overlay["width"] / 900  # noqa: E731
                to_y = lambda y: overlay["y"] + y * overlay["height"] / 700  # noqa: E731

                # Drag the cut with the mouse to the seam, then nudge it to the pixel.
                line = page.locator("[data-testid=cut][data-dir=h]")
                expect(line).to_have_count(1)
                page.mouse.move(to_x(600), to_y(350))
                page.mouse.down()
                page.mouse.move(to_x(600), to_y(seam_y), steps=8)
                page.mouse.up()
                nudge_to(page, line, seam_y, "ArrowUp", "ArrowDown")

                # Cut the top tile (key), take the cut away (double click); again with the
                # button and a click, taken away with Delete.
                page.mouse.move(to_x(300), to_y(100))
                page.keyboard.press("v")
                top_cut = page.locator("[data-testid=cut][data-dir=v]")
                expect(top_cut).to_have_count(1)
                expect(editor).to_have_attribute("data-tiles", "3")
                box = top_cut.bounding_box()
                page.mouse.dblclick(box["x"] + box["width"] / 2, to_y(100))
                expect(editor).to_have_attribute("data-tiles", "2")
                page.get_by_test_id("add-v").click()
                page.mouse.click(to_x(300), to_y(100))
                expect(top_cut).to_have_count(1)
                page.keyboard.press("Delete")  # the cut just added is the selected one
                expect(top_cut).to_have_count(0)

                # Cut the bottom tile where its two photos meet.
                page.get_by_test_id("add-v").click()
                page.mouse.click(to_x(seam_x + 3), to_y(500))
                bottom_cut = page.locator("[data-testid=cut][data-dir=v]")
                nudge_to(page, bottom_cut, seam_x, "ArrowLeft", "ArrowRight")
                drawn = page.locator("[data-testid=tile]")
                expect(drawn).to_have_count(3)
                assert sorted(drawn.nth(i).get_attribute("data-box") for i in range(3)) == sorted(
                    " ".join(map(str, b.as_list())) for b in truth
                )

                # One key saves the fix and moves on; one key accepts the next photo.
                with page.expect_response(lambda r: r.url.endswith("/api/cuts/save")) as saved:
                    page.keyboard.press("a")
                assert saved.value.json()["action"] == "hint"
                expect(page.get_by_test_id("message")).to_contain_text("split_hints.csv")
                expect(items).to_have_count(2)
                next_id = editor.get_attribute("data-photo")
                assert next_id != rows_id
                with page.expect_response(lambda r: r.url.endswith("/api/cuts/save")) as accepted:
                    page.keyboard.press("a")
                assert accepted.value.json()["action"] == "accepted"
                expect(items).to_have_count(1)
                page.get_by_test_id("show-done").check()
                expect(items).to_have_count(3)
                page.locator(f'[data-testid=queue-item][data-photo="{rows_id}"]').click()
                expect(page.get_by_test_id("info")).to_contain_text("re-run pending")
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "cuts_review.png"))
                assert not errors, errors
            finally:
                browser.close()

        hints = (layout.album_dir(ALBUM) / "split_hints.csv").read_text()
        assert hints.splitlines()[-1] == "rows.jpg,0 0 900 304; 0 304 450 700; 450 304 900 700"
        assert set(read_accepted_cuts(accepted_cuts_path(layout))) == {next_id}

        # The daemon's next tick: the hints changed, so photo_tiles alone re-runs for the album.
        second = sensor_tick(instance, first.cursor)
        assert [(r.partition_key, r.asset_selection) for r in second.run_requests] == [
            (ALBUM, [dg.AssetKey("photo_tiles")])
        ]
        rerun = run_request(layout, instance, second.run_requests[0])
        recut = rerun.asset_materializations_for_node("photo_tiles")[0].metadata
        assert (recut["photos_split"].value, recut["photos_reused_from_cache"].value) == (1, 2)
        after = pd.read_parquet(layout.table_path("photo_tiles", ALBUM))
        fixed = after[after["photo_id"] == rows_id]
        assert sorted(Box(r.x0, r.y0, r.x1, r.y1) for r in fixed.itertuples()) == truth
        assert set(fixed["decided_by"]) == {"manual"}
        others = after[after["photo_id"] != rows_id].reset_index(drop=True)
        pd.testing.assert_frame_equal(
            others, tiles[tiles["photo_id"] != rows_id].reset_index(drop=True)
        )

        with urllib.request.urlopen(f"{base}/api/cuts?album={ALBUM}") as response:
            state = json.load(response)
        by_id = {p["id"]: p for p in state["photos"]}
        assert (by_id[rows_id]["status"], by_id[rows_id]["pending"]) == ("by_hand", False)
        assert by_id[next_id]["status"] == "accepted"
        assert state["summary"]["to_review"] == 1


def nudge_to(page, line, target: int, smaller: str, larger: str) -> None:
    """Arrow keys move the selected cut a pixel at a time (the line was selected by the drag or
    by being added); the cut's gap starts at ``data-a``."""
    for _ in range(40):
        position = int(line.get_attribute("data-a"))
        if position == target:
            return
        page.keyboard.press(larger if position < target else smaller)
    raise AssertionError(f"the cut stayed at {line.get_attribute('data-a')}, not {target}")
