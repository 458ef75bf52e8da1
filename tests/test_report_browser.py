"""The report as a browser shows it: headless Chromium (Debian's chromium) loads every chart, and
its screenshot shows them."""
import json
import os

import matplotlib.image
import numpy as np
import pytest

from pipeline.report import build_report
from schemas.tables import CLIPS_SCHEMA
from tests.browser import image_sizes, screenshot
from tests.test_report import START, clips_rows, error_rows, incremental_manifest, write_run

CHARTS = {"Top-1 label frequency", "Top-1 score distribution", "Errors by stage and type", "Windows per clip",
          "Throughput"}
BAR_BLUE, HISTOGRAM_GREEN = (0x3b, 0x75, 0xaf), (0x4c, 0x9a, 0x5f)   # pipeline/report.py's colours


def pixels_near(image: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 6) -> int:
    rgb_image = (image[..., :3] * 255).round().astype(int)
    return int((np.abs(rgb_image - np.asarray(rgb)).max(axis=-1) <= tolerance).sum())


@pytest.mark.slow
def test_chromium_loads_every_chart_and_its_screenshot_shows_them(tmp_path):
    rows = clips_rows("r6")
    for i, row in enumerate(rows):
        row["num_windows"] = 1 + i % 6
    run = write_run(str(tmp_path), "r6", rows, error_rows("r6"), clips_schema=CLIPS_SCHEMA)
    with open(os.path.join(run, "_MANIFEST.json"), "w") as f:
        json.dump({**incremental_manifest(), "run_id": "r6",
                   "timings": {"started": START.isoformat(), "seconds": 40.0,
                               "stages": {"prepare": 2.0, "job": 35.0, "accounting": 1.0, "publish": 2.0}}}, f)
    out = str(tmp_path / "report")
    page = build_report(run, out)

    images = image_sizes(page)
    assert {i["alt"] for i in images} == CHARTS
    for image in images:
        on_disk = matplotlib.image.imread(os.path.join(out, {
            "Top-1 label frequency": "label_frequency", "Top-1 score distribution": "top1_scores",
            "Errors by stage and type": "errors", "Windows per clip": "windows_per_clip",
            "Throughput": "throughput"}[image["alt"]] + ".png"))
        # Decoded by the browser, at the size of the PNG the report wrote.
        assert image["complete"] and (image["height"], image["width"]) == on_disk.shape[:2], image

    shot = matplotlib.image.imread(screenshot(page, str(tmp_path / "shot.png"), 1200, 2400))
    assert shot.shape[:2] == (2400, 1200)
    assert len(np.unique(shot.reshape(-1, shot.shape[-1]), axis=0)) > 200      # not blank
    # The first two charts are on screen: their bars' colours fill real areas.
    assert pixels_near(shot, BAR_BLUE) > 5000 and pixels_near(shot, HISTOGRAM_GREEN) > 5000
