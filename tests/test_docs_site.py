"""The documentation site: built with `mkdocs build --strict` (a broken link or a docstring that does
not render fails it), then a few of its pages opened in the real browser, served as a web server would.

Needs the [docs] extra (part of [test]); skipped without it, and without chromium as the browser tests are.
"""

import functools
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings")

from .web.test_web_browser import By, WebDriverWait, browser, pytestmark  # noqa: E402, F401 (its skip: no chromium)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The built site, served on a free local port."""
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=REPO,
                           capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert build.returncode == 0, build.stderr[-3000:]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_site_renders_its_pages_and_the_api_from_the_docstrings(site, tmp_path):
    d = browser()
    try:
        d.get(f"{site}/")
        assert "avemo" in d.title
        nav = {a.get_attribute("textContent").strip() for a in d.find_elements(By.CSS_SELECTOR, "nav.md-nav--primary a.md-nav__link")}
        assert {"User guide", "Model card", "API reference", "Benchmarks (speed)"} <= nav
        assert "not a felt emotion" in d.find_element(By.TAG_NAME, "article").text
        d.get(f"{site}/api/")
        predict = WebDriverWait(d, 10).until(lambda d: d.find_element(By.ID, "avemo.predict.Model.predict"))
        assert "predict" in predict.text
        assert "people" in d.find_element(By.TAG_NAME, "article").text  # the docstring's own words
        d.get(f"{site}/model-card/")
        headings = [h.text for h in d.find_elements(By.CSS_SELECTOR, "article h2")]
        assert any("Intended use" in h for h in headings) and any("Ethical" in h for h in headings)
        d.get(f"{site}/usage/")
        assert len(d.find_elements(By.CSS_SELECTOR, "article table")) >= 1
        d.save_screenshot(str(tmp_path / "docs.png"))
    finally:
        d.quit()
