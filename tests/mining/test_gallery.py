"""index.html in a real browser: headless Chromium (Debian's ``chromium``) shows the top frames."""
from __future__ import annotations

import html.parser
import shutil
import subprocess
from pathlib import Path

import cv2
import pyarrow.parquet as pq
import pytest

from pgn_deploy.mining import MineOptions, mine

TOP = 3
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class _Images(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.sources.append(values["src"] or "")
        if tag == "a":
            self.links.append(values["href"] or "")
        assert tag not in ("script", "link", "iframe"), f"the gallery must be self-contained, found <{tag}>"


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian package chromium)")
def test_gallery_shows_the_top_frames_in_chromium(frame_set: dict, tmp_path: Path) -> None:
    out = tmp_path / "mined"
    mine(frame_set["model"], [frame_set["root"] / "imgs"], out,
         MineOptions(threshold=frame_set["threshold"], min_area=3, top=TOP))
    parser = _Images()
    parser.feed((out / "index.html").read_text())
    assert len(parser.sources) == TOP
    assert all((out / src).is_file() and not Path(src).is_absolute() for src in parser.sources)
    frames = pq.read_table(out / "frames.parquet").to_pydict()
    assert parser.links == [Path(source).as_uri() for source in frames["source"][:TOP]]  # in rank order

    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--force-device-scale-factor=1", "--window-size=900,1400", f"--screenshot={shot}",
                    (out / "index.html").as_uri()], check=True, capture_output=True, timeout=120, cwd=tmp_path)
    screen = cv2.imread(str(shot))
    found = []
    for src in parser.sources:  # each overlay is on the page at its own size, one below the other
        overlay = cv2.imread(str(out / src))
        match = cv2.matchTemplate(screen, overlay, cv2.TM_CCOEFF_NORMED)
        _, best, _, (x, y) = cv2.minMaxLoc(match)
        assert best > 0.95, src
        found.append(y)
    assert found == sorted(found) and len(set(found)) == TOP
