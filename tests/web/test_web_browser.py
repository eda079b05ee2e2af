"""The web app in a real browser: Debian's chromium driven by Selenium, against a real `avemo serve`.

Skipped, loudly, where chromium and its driver are not installed (`.ci/run` installs them).
"""

import shutil
import time
from fractions import Fraction

import av
import numpy as np
import pytest

pytest.importorskip("fastapi")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from avemo.media import load_audio  # noqa: E402

from ..conftest import ANGRY, FACE_VIDEO, write_wav  # noqa: E402
from .test_web import SAMPLE, Server  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="BROWSER TESTS SKIPPED: apt-get install chromium chromium-driver")


def browser(*extra: str):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # the flags this machine needs: no sandbox as root, and no background calls to a closed network
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,1100", "--autoplay-policy=no-user-gesture-required", *extra):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("browser-serve"))
    yield srv
    srv.stop()


def test_upload_the_sample_see_its_timeline_and_seek_by_clicking(server, tmp_path):
    d = browser()
    try:
        d.get(f"http://127.0.0.1:{server.port}/")
        d.find_element(By.ID, "files").send_keys(str(SAMPLE))
        link = WebDriverWait(d, 60).until(lambda d: d.find_element(By.CSS_SELECTOR, "[data-role=result-link]"))
        WebDriverWait(d, 120).until(lambda d: "done" in d.find_element(By.CSS_SELECTOR, "[data-role=state]").text)
        link.click()
        WebDriverWait(d, 60).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-status") == "done")
        spans = [(float(s.get_attribute("data-start")), float(s.get_attribute("data-end")))
                 for s in d.find_elements(By.CSS_SELECTOR, "[data-role=timeline] [data-role=segment]")]
        assert len(spans) == 5 and spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(12.0, abs=0.1)
        assert len(d.find_elements(By.CSS_SELECTOR, "#rows tr")) == 5
        WebDriverWait(d, 30).until(lambda d: d.execute_script("return document.querySelector('[data-role=player]').readyState") >= 1)
        timeline = d.find_element(By.ID, "timeline")
        # click three quarters of the way along (offsets are from the element's centre)
        ActionChains(d).move_to_element_with_offset(timeline, timeline.size["width"] // 4, 0).click().perform()
        WebDriverWait(d, 10).until(lambda d: abs(d.execute_script(
            "return document.querySelector('[data-role=player]').currentTime") - 9.0) < 0.5)
        cursor = float(d.find_element(By.CSS_SELECTOR, "[data-role=cursor]").get_attribute("x1"))
        assert cursor == pytest.approx(750, abs=40)  # the cursor follows (viewBox 1000 wide)
        # the segment under it is shown, its face boxed (read in one go: the page redraws them as it plays)
        shown = d.execute_script("return [document.querySelector('[data-role=emotion]').textContent, "
                                 "getComputedStyle(document.querySelector('[data-role=face-box]')).display]")
        assert shown[0].split()[0] in ("neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust")
        assert shown[1] == "block"
        hrefs = [a.get_attribute("href") for a in d.find_elements(By.CSS_SELECTOR, "[data-role^=download-]")]
        assert [h.rsplit("=", 1)[1] for h in hrefs] == ["json", "csv", "srt"]
        d.save_screenshot(str(tmp_path / "result.png"))
        assert (tmp_path / "result.png").stat().st_size > 10_000
    finally:
        d.quit()


def _result_with_people(d, server, media) -> None:
    """Upload `media` on the start page with people told apart, wait until it is analysed, and open its result."""
    from selenium.webdriver.support.ui import Select

    d.get(f"http://127.0.0.1:{server.port}/")
    Select(d.find_element(By.ID, "people")).select_by_value("on")
    d.find_element(By.ID, "files").send_keys(str(media))
    link = WebDriverWait(d, 60).until(lambda d: d.find_element(By.CSS_SELECTOR, "[data-role=result-link]"))
    WebDriverWait(d, 120).until(lambda d: "done" in d.find_element(By.CSS_SELECTOR, "[data-role=state]").text)
    link.click()


def test_people_each_get_a_lane_of_their_turns(server, tmp_path):
    """A real two-person recording uploaded with people told apart: one lane per person, their
    turns in it; a click on a turn seeks the player there."""
    from pathlib import Path

    recording = Path(__file__).parents[1] / "data" / "pyannote_sample" / "sample.wav"
    d = browser()
    try:
        _result_with_people(d, server, recording)
        WebDriverWait(d, 60).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-status") == "done")
        lanes = d.find_elements(By.CSS_SELECTOR, "[data-role=people] [data-role=lane]")
        assert [lane.get_attribute("data-person") for lane in lanes] == ["P1", "P2"]
        turns = {lane.get_attribute("data-person"): lane.find_elements(By.CSS_SELECTOR, "[data-role=turn]") for lane in lanes}
        assert all(len(t) >= 2 for t in turns.values())
        assert {row.find_elements(By.TAG_NAME, "td")[2].text for row in d.find_elements(By.CSS_SELECTOR, "#rows tr")} == {"P1", "P2"}
        WebDriverWait(d, 30).until(lambda d: d.execute_script("return document.querySelector('[data-role=player]').readyState") >= 1)
        last = turns["P2"][-1]
        assert d.find_element(By.ID, "lanes").size["width"] > 500  # shown, as wide as the timeline
        ActionChains(d).move_to_element(last).click().perform()  # the middle of P2's last turn (27.7-30 s)
        start = float(last.get_attribute("data-start"))
        WebDriverWait(d, 10).until(lambda d: start + 0.3 < d.execute_script(
            "return document.querySelector('[data-role=player]').currentTime") < 30.0)
        assert d.find_element(By.CSS_SELECTOR, "[data-role=person]").text == "P2"
        d.save_screenshot(str(tmp_path / "people.png"))
    finally:
        d.quit()


def test_a_filmed_persons_lane_shows_their_face(server, tmp_path):
    """The shipped sample (one woman filmed speaking) with people on: her lane starts with her face,
    cut by the browser from the video where her box was judged (a picture, not a blank square)."""
    from pathlib import Path

    sample = Path(__file__).parents[2] / "examples" / "sample.mp4"
    d = browser()
    try:
        _result_with_people(d, server, sample)
        face = WebDriverWait(d, 60).until(lambda d: d.find_element(By.CSS_SELECTOR, "[data-role=people] [data-role=face]"))
        assert face.find_element(By.XPATH, "..").get_attribute("data-person") == "P1"
        # the picture's grey levels vary as a face's do (a failed cut is one flat colour)
        spread = d.execute_script("""
            const img = new Image(); img.src = arguments[0].getAttribute('href');
            return new Promise(done => { img.onload = () => {
              const c = document.createElement('canvas'); c.width = c.height = 64;
              const g = c.getContext('2d'); g.drawImage(img, 0, 0);
              const px = g.getImageData(0, 0, 64, 64).data, grey = [];
              for (let i = 0; i < px.length; i += 4) grey.push((px[i] + px[i + 1] + px[i + 2]) / 3);
              const mean = grey.reduce((a, b) => a + b) / grey.length;
              done(Math.sqrt(grey.reduce((a, b) => a + (b - mean) ** 2, 0) / grey.length)); }; });""", face)
        assert spread > 15
        d.save_screenshot(str(tmp_path / "face-lane.png"))
    finally:
        d.quit()


def _fake_devices(folder):
    """The face video as Y4M (Chromium's fake camera) and a real RAVDESS utterance with pauses as
    WAV (its fake microphone): both real recordings, converted."""
    y4m, wav = folder / "face.y4m", folder / "voice.wav"
    with av.open(str(FACE_VIDEO)) as src, av.open(str(y4m), "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=10)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        n = 0
        for frame in src.decode(video=0):
            if frame.time is None or frame.time * 10 < n:
                continue
            picture = frame.reformat(format="yuv420p")
            picture.pts, picture.time_base = n, Fraction(1, 10)
            out.mux(stream.encode(picture))
            n += 1
            if n >= 60:
                break
        out.mux(stream.encode(None))
    voice = np.concatenate([np.zeros(8000, np.float32), load_audio(ANGRY), np.zeros(24000, np.float32)])
    return y4m, write_wav(wav, voice)


def test_live_page_judges_the_camera_and_microphone(server, tmp_path):
    y4m, wav = _fake_devices(tmp_path)
    d = browser("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-video-capture={y4m}", f"--use-file-for-fake-audio-capture={wav}")
    try:
        d.get(f"http://127.0.0.1:{server.port}/live")
        d.find_element(By.ID, "start").click()
        both = "return segments.filter(s => s.modalities.length === 2)"  # the page's own list of what came
        WebDriverWait(d, 90).until(lambda d: d.execute_script(both + ".length") >= 1)
        spoken = d.execute_script(both)
        assert all(s["face_box"] and s["faces"] == 1 for s in spoken)
        # each answer comes while the session runs, soon after its stretch ends (on the sound's clock):
        # ~1 s on the 2-core machine when nothing else runs (README); loaded by other work, several
        latency = min(s["latency"] for s in spoken)
        assert 0 <= latency < 10, latency
        print(f"live latency: {latency:.2f} s")
        d.save_screenshot(str(tmp_path / "live.png"))
        d.find_element(By.ID, "stop").click()
        WebDriverWait(d, 60).until(lambda d: "stopped" in d.find_element(By.ID, "state").text)
        assert d.find_element(By.ID, "save").is_enabled()
        time.sleep(0.2)
    finally:
        d.quit()
