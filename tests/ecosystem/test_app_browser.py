"""``sfd app`` in a real headless browser (Debian's chromium and chromedriver; nothing is
downloaded): the page loads, a generation completes, the gallery shows exactly the pixels
``sfd sample`` writes for the same seed, labels and settings, and the stage strip is drawn.

Marked ``browser`` (deselected by default): ``apt-get install -y chromium chromium-driver``,
``pip install -e '.[app,browser-test]'``, then ``pytest -m browser``. ``SFD_APP_RUN`` (and
``SFD_APP_DECODER``) point it at another run, e.g. the demo's model.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from sfd.cli import main
from tests.ecosystem.ecosystem_helpers import tiny_run_fixture  # noqa: F401  (fixture tiny_run)

pytestmark = pytest.mark.browser
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
NUM, SEED = 8, 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.fail("the browser test needs: apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield driver
    driver.quit()


def test_app_generates_what_sfd_sample_writes(browser, tiny_run, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from sfd.ecosystem.app import build_app, load_pipeline

    run = Path(os.environ.get("SFD_APP_RUN") or tiny_run / "run")
    decoder = os.environ.get("SFD_APP_DECODER")
    pipe = load_pipeline(run, Path(decoder) if decoder else None)
    app = build_app(pipe, seed=SEED)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        browser.get(url)
        wait = WebDriverWait(browser, 600)
        wait.until(ec.element_to_be_clickable((By.ID, "generate"))).click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#samples img")) >= NUM)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#stages img"))
        sources = [
            e.get_attribute("src") for e in browser.find_elements(By.CSS_SELECTOR, "#samples img")
        ]
        shown = [
            np.asarray(Image.open(io.BytesIO(urllib.request.urlopen(s).read()))) for s in sources
        ]
    finally:
        app.close()

    # the app's defaults: the first 4 classes in turn, the run's steps, its texture CFG scale
    s = pipe.scheduler.config
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(str(i % 4) for i in range(NUM)))
    scale = f"sample.cfg_scale_sem={s.cfg_scale_tex}"
    args = [
        "sample",
        run,
        "--num",
        NUM,
        "--seed",
        SEED,
        "--labels",
        labels,
        "--out",
        tmp_path / "cli",
        "--set",
        scale,
    ]
    if decoder:
        args += ["--decoder", decoder]
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    for i in range(NUM):
        want = np.asarray(Image.open(tmp_path / f"cli/images/{i:06d}.png").convert("RGB"))
        got = shown[i][..., :3] if shown[i].ndim == 3 else np.stack([shown[i]] * 3, -1)
        assert np.array_equal(got, want), i
