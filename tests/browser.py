"""Render a page in headless Chromium (Debian's ``chromium``; .ci/run installs it): a screenshot, and
the size each image of the page decoded to.

    python -m tests.browser <page.html> <screenshot.png> [width height]

(the README's picture of the report is made this way from the demo's report).

Chromium runs with a new empty profile, no sandbox (tests run as root in containers), no GPU, and
every background network feature off: it loads the local page and nothing else.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

CHROMIUM_NAMES = ("chromium", "chromium-browser")
QUIET_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", "--force-device-scale-factor=1")
# Appended to a copy of the page: once everything has loaded, each image's decoded size is written
# into the DOM, which --dump-dom then prints.
_MEASURE = """<script>window.addEventListener("load", () => {
  for (const img of document.images) {
    img.setAttribute("data-natural", img.naturalWidth + "x" + img.naturalHeight);
    img.setAttribute("data-complete", String(img.complete));
  }
  document.body.setAttribute("data-measured", "yes");
});</script>"""


def chromium_binary() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError("this needs headless Chromium: apt-get install -y chromium (.ci/run does)")


def _chromium(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        done = subprocess.run([chromium_binary(), *QUIET_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise AssertionError(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
    return done


def screenshot(page: str, png: str, width: int = 1200, height: int = 1600) -> str:
    """A ``width`` x ``height`` screenshot of the top of ``page`` (a local HTML file) into ``png``."""
    if os.path.exists(png):
        os.remove(png)
    _chromium([f"--window-size={width},{height}", f"--screenshot={os.path.abspath(png)}",
               "--virtual-time-budget=5000", "file://" + os.path.abspath(page)])
    if not os.path.isfile(png):
        raise AssertionError(f"chromium wrote no screenshot {png}")
    return png


def image_sizes(page: str) -> list[dict]:
    """Each ``<img>`` of ``page`` as Chromium loaded it: alt text, decoded (natural) width and
    height, and whether it completed. Renders a measuring copy of the page beside it."""
    with open(page, encoding="utf-8") as f:
        text = f.read()
    measuring = os.path.join(os.path.dirname(os.path.abspath(page)), ".measure-" + os.path.basename(page))
    with open(measuring, "w", encoding="utf-8") as f:
        f.write(text.replace("</body>", _MEASURE + "</body>"))
    try:
        dom = _chromium(["--dump-dom", "--virtual-time-budget=5000", "file://" + measuring]).stdout
    finally:
        os.remove(measuring)
    if 'data-measured="yes"' not in dom:
        raise AssertionError("the page's load event never ran in chromium")
    found = []
    for tag in re.findall(r"<img\b[^>]*>", dom):
        attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', tag))
        width, _, height = attrs.get("data-natural", "0x0").partition("x")
        found.append({"alt": attrs.get("alt", ""), "width": int(width), "height": int(height),
                      "complete": attrs.get("data-complete") == "true"})
    return found


if __name__ == "__main__":
    size = [int(v) for v in sys.argv[3:5]] or [1200, 1600]
    print(screenshot(sys.argv[1], sys.argv[2], *size))
