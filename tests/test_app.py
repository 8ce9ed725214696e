"""The browser app (app.py), as a user and a script meet it: one real server per module
(`app.py --model preset:tiny` in a subprocess on a free port, with a login), driven through its `/restore`
API with gradio_client and through the page in headless Chromium (skipped where Debian's chromium is absent).

The server's temporary folder lies under this module's own one (TMPDIR), so the tests see what it writes
and that it is all gone once the server stops. Its limits are set low enough for header-only refusals, and
its upload limit to 1 MB.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from fractions import Fraction
from importlib.metadata import version
from pathlib import Path

import av
import numpy as np
import pytest

gradio_client = pytest.importorskip("gradio_client")
from footage import REPO, SAMPLE, sample_frames, two_person_frames, worker_pids, write_clip  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError, AuthenticationError  # noqa: E402
from gradio_client.utils import Status  # noqa: E402

from keep.image import read_image, write_image  # noqa: E402

SCREENSHOT = REPO / "docs" / "images" / "app.jpg"
GRADIO_6 = int(version("gradio").split(".")[0]) >= 6  # the server's, installed beside this test
MAX_FRAMES, MAX_PIXELS, MAX_SECONDS, MAX_UPLOAD_MB = 400, 200_000, 60, 1
AUTH = ("tester", "correct horse battery")  # the login, given to the server in $KEEP_APP_AUTH
START_TIMEOUT_S = 180
JOB_TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(url, process, temp folder of the app) of a running `app.py --model preset:tiny`."""
    folder = tmp_path_factory.mktemp("app")
    temp = folder / "tmp"
    temp.mkdir()
    port, nowhere = free_port(), f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ, "KEEP_OFFLINE": "0", "KEEP_DEBUG": "", "TMPDIR": str(temp),
        # no weights anywhere and no network: a download fails as on a machine offline (its request goes to a
        # proxy on a closed local port), so the releases are unavailable
        "KEEP_WEIGHTS_DIR": str(folder / "weights"), "KEEP_CACHE_DIR": str(folder / "cache"),
        "TORCH_HOME": str(folder / "torch"), "KEEP_APP_AUTH": ":".join(AUTH),
        **dict.fromkeys(("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"), nowhere),
        **dict.fromkeys(("no_proxy", "NO_PROXY"), "127.0.0.1,localhost"),  # the app's requests to itself
    }  # fmt: skip
    command = [
        sys.executable, str(REPO / "app.py"), "--model", "preset:tiny", "--port", str(port),
        "--max_frames", str(MAX_FRAMES), "--max_pixels", str(MAX_PIXELS), "--max_seconds", str(MAX_SECONDS),
        "--max_upload_mb", str(MAX_UPLOAD_MB),
    ]  # fmt: skip
    log = open(folder / "server.log", "w")  # noqa: SIM115 - closed at teardown
    process = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"app.py did not start: {(folder / 'server.log').read_text()[-3000:]}")
        time.sleep(0.5)
    yield url, process, temp
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("app.py did not stop within 60 s of SIGTERM")
    finally:
        log.close()
    server_log = (folder / "server.log").read_text()
    assert "Traceback" not in server_log and "warning:" not in server_log, server_log[-3000:]
    assert not list(temp.glob("keep-app-*")), "the app left its uploads or outputs behind"


def video_input(path: Path) -> dict:
    """The API's video: Gradio 6 takes the file, Gradio 5 a dict of the file and its subtitles."""
    return handle_file(str(path)) if GRADIO_6 else {"video": handle_file(str(path))}


def video_path(output: str | dict) -> str:
    """The path of an API's video result: Gradio 6 gives the path, Gradio 5 a dict holding it."""
    return output if GRADIO_6 else output["video"]


def restore(client: Client, video: Path, **options):
    return client.predict(video_input(video), **options, api_name="/restore")


def refusal(client: Client, video: Path, **options) -> str:
    with pytest.raises(AppError) as caught:
        restore(client, video, **options)
    message = str(caught.value)
    assert "Traceback" not in message and "keep-app-" not in message, message  # no server paths either
    return message


def client(url: str) -> Client:
    return Client(url, auth=AUTH, verbose=False)


def uploads(temp: Path, name: str) -> list[Path]:
    """The server's stored copies of an upload named `name` (Gradio stores each in a folder of its own)."""
    return list(temp.glob(f"keep-app-*/*/{name}"))


def gone_soon(temp: Path, name: str, seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while uploads(temp, name):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def stream_facts(path: str | Path) -> dict:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio
        facts = {
            "fps": video.average_rate,
            "size": (video.codec_context.width, video.codec_context.height),
            "audio": [(a.codec_context.name, a.rate, a.channels) for a in audio],
        }
        facts["frames"] = sum(1 for _ in container.decode(video))
    return facts


def test_a_text_file_is_refused_and_removed_and_the_next_request_restores_the_sample(server, tmp_path):
    url, _, temp = server
    api = client(url)
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n")
    assert "cannot open video notes.txt" in refusal(api, text)
    fake = tmp_path / "fake.mp4"  # a text file renamed
    fake.write_text("not a video\n")
    assert "cannot open video fake.mp4: not a video FFmpeg can read" in (message := refusal(api, fake))
    assert "Errno" not in message  # in words
    assert gone_soon(temp, "notes.txt") and gone_soon(temp, "fake.mp4")  # removed with their requests

    video, (before, after), faces, summary = restore(api, SAMPLE)
    assert uploads(temp, SAMPLE.name)  # a finished job's upload stays while its session lives
    source, out = stream_facts(SAMPLE), stream_facts(video_path(video))
    assert out == source  # frames, frame rate, size, audio (codec, rate, channels)
    assert source["frames"] == 75 and source["audio"]
    assert Path(before).is_file() and Path(after).is_file()
    assert [face["caption"].split(" (")[0] for face in faces] == ["track 0 before", "track 0 after"]
    assert "**1 face track(s)**" in summary and "flow `dis`" in summary and "| network |" in summary


def test_limits_and_unavailable_weights_are_explained(server, tmp_path):
    url, process, temp = server
    api = client(url)
    black = np.zeros((480, 640, 3), np.uint8)
    large = write_clip(tmp_path / "large.mp4", [black] * 2, fps=Fraction(25))
    message = refusal(api, large)
    assert "640x480 = 307200 pixels" in message and f"at most {MAX_PIXELS}" in message
    assert "--max_pixels N" in message and "KEEP_APP_MAX_PIXELS=N" in message
    small = np.zeros((32, 32, 3), np.uint8)
    many = write_clip(tmp_path / "many.mp4", [small] * (MAX_FRAMES + 1), fps=Fraction(25))
    assert f"it has {MAX_FRAMES + 1} frames" in (message := refusal(api, many)) and "--max_frames" in message
    slow = write_clip(tmp_path / "slow.mp4", [small] * 2, fps=Fraction(1, 40))  # 80 s
    assert "it lasts 80.0 s" in (message := refusal(api, slow)) and "--max_seconds" in message

    message = refusal(api, SAMPLE, model="keep")  # the CLI's message: file, URL, where to put it
    assert "KEEP-b76feb75.pth" in message and "https://github.com/jnjaby/KEEP/releases/download/v1.0.0/" in message
    assert "(URLError: &lt;urlopen error" in message  # HTML, as Gradio's errors are: the page shows it whole
    assert "put it in" in message and "--model" in message
    assert all(gone_soon(temp, name) for name in ("large.mp4", "many.mp4", "slow.mp4"))  # refused: removed
    assert process.poll() is None


def test_an_oversized_upload_is_refused_while_it_arrives(server, tmp_path):
    """gradio_client refuses it before sending (the server's `max_file_size` is in its config); a client that
    sends it anyway gets 413 and nothing of it is stored."""
    import httpx

    url, _, temp = server
    api = client(url)
    big = tmp_path / "big.mp4"
    big.write_bytes(np.random.default_rng(0).integers(0, 256, int(1.2 * 2**20), np.uint8).tobytes())
    limit = f"{MAX_UPLOAD_MB * 2**20} bytes"
    with pytest.raises(ValueError, match=f"exceeds the maximum file size of {limit}"):
        restore(api, big)
    with big.open("rb") as data:
        response = httpx.post(f"{url}gradio_api/upload", files={"files": data}, cookies=api.cookies, timeout=60)
    assert response.status_code == 413 and f"maximum allowed size of {limit}" in response.text
    assert not [p for p in temp.rglob("*") if p.is_file() and p.stat().st_size > 2**20]


def test_without_the_login_the_api_refuses(server):
    url, _, _ = server
    with pytest.raises(AuthenticationError):
        Client(url, verbose=False)
    for request in (
        urllib.request.Request(f"{url}config"),
        urllib.request.Request(f"{url}gradio_api/upload", data=b"--x--", method="POST",
                               headers={"Content-Type": "multipart/form-data; boundary=x"}),
    ):  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 401


def test_a_second_request_waits_and_a_cancelled_job_ends_its_workers(server, tmp_path):
    url, process, temp = server
    long_clip = write_clip(tmp_path / "long.mp4", sample_frames(MAX_FRAMES), fps=Fraction(30000, 1001))
    first, second = client(url), client(url)
    job = first.submit(video_input(long_clip), api_name="/restore")
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not any(unit.desc == "restoring" and unit.index for unit in job.status().progress_data or []):
        assert not job.done() and time.monotonic() < deadline, "the long job made no progress"
        time.sleep(0.2)
    workers = set(worker_pids(process.pid))
    assert len(workers) == 2  # the front and back stages of the pipeline

    waiting = second.submit(video_input(SAMPLE), api_name="/restore")
    while (status := waiting.status()).code != Status.IN_QUEUE:
        assert not waiting.done() and time.monotonic() < deadline, status
        time.sleep(0.1)
    assert status.rank == 0 and not job.done()  # its place is shown: next in line
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=30) as response:  # the page still answers
        assert response.status == 200
    assert time.monotonic() - started < 10

    first.predict(api_name="/cancel")
    with pytest.raises(AppError, match="cancelled"):
        job.result(timeout=JOB_TIMEOUT_S)
    while workers & set(worker_pids(process.pid)):
        assert time.monotonic() < deadline, "the cancelled job's workers live on"
        time.sleep(0.2)
    assert not list(temp.rglob("*.partial.mp4")) and not list(temp.rglob("sessions/*/*/long*"))
    said = set()  # the next job runs on new workers, and its progress says so while they start
    while not waiting.done():
        said.update(unit.desc for unit in waiting.status().progress_data or [])
        time.sleep(0.1)
    assert "starting the model's workers again (a cancel stops them)" in said, said
    video, *_ = waiting.result(timeout=JOB_TIMEOUT_S)
    assert stream_facts(video_path(video))["frames"] == 75


def test_listening_beyond_this_machine_without_a_login_is_a_warning(tmp_path):
    """`--host 0.0.0.0` and no login: one warning line before the server starts (here it cannot: its port
    is taken, so nothing is ever served)."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEEP_APP_AUTH")}
        command = [
            sys.executable, str(REPO / "app.py"), "--model", "preset:tiny", "--host", "0.0.0.0", "--port", str(port)
        ]  # fmt: skip
        result = subprocess.run(
            command, env={**env, "KEEP_OFFLINE": "1", "TMPDIR": str(tmp_path)}, capture_output=True, text=True,
            timeout=START_TIMEOUT_S,
        )  # fmt: skip
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and lines[-1].startswith(f"error: cannot listen on 0.0.0.0:{port}"), result.stderr
    warnings = [line for line in lines if line.startswith("warning:")]
    assert warnings == [
        f"warning: listening on 0.0.0.0:{port} without a login: anyone who can reach this port can use this "
        "machine (set KEEP_APP_AUTH=user:password or --auth_file FILE)"
    ]  # fmt: skip


def test_logins_come_from_a_file_or_the_environment(tmp_path, monkeypatch):
    from keep.errors import KeepError
    from keep.webapp import is_local, read_logins

    monkeypatch.delenv("KEEP_APP_AUTH", raising=False)
    monkeypatch.delenv("KEEP_APP_AUTH_FILE", raising=False)
    assert read_logins() == []
    monkeypatch.setenv("KEEP_APP_AUTH", "ann:pass:word")
    assert read_logins() == [("ann", "pass:word")]
    logins = tmp_path / "logins"
    logins.write_text("# who may use the app\nann:one\n\nbob:two\n")
    assert read_logins(logins) == [("ann", "one"), ("bob", "two")]  # a file before the variable
    monkeypatch.setenv("KEEP_APP_AUTH_FILE", str(logins))
    assert read_logins() == [("ann", "one"), ("bob", "two")]
    logins.write_text("ann:one\nbob\n")
    with pytest.raises(KeepError, match="logins line 2: expected user:password"):
        read_logins()
    with pytest.raises(KeepError, match="cannot read the login file .*missing"):
        read_logins(tmp_path / "missing")
    assert all(map(is_local, ("127.0.0.1", "127.0.0.2", "::1", "localhost")))
    assert not any(map(is_local, ("0.0.0.0", "::", "192.168.1.5", "keep.example.org")))


def test_a_face_is_cropped_back_from_its_logged_corners():
    """The gallery's crops come from the corners of `<stem>_faces.jsonl` (rounded to 0.01 px): the same
    aligned face as the pipeline's own crop through its affine matrix."""
    from keep.face.align import align_face, crop_corners, estimate_affine
    from keep.webapp import crop_face

    rgb = sample_frames(1)[0]
    landmarks = np.array([[80.3, 60.2], [104.9, 62.7], [92.1, 78.4], [82.6, 93.0], [101.8, 94.9]])
    matrix = estimate_affine(landmarks, 64)
    corners = crop_corners(matrix, 64).round(2)
    difference = np.abs(crop_face(rgb, corners, 64).astype(int) - align_face(rgb, matrix, 64).astype(int))
    assert difference.mean() < 0.1 and difference.max() <= 2


def chromium():
    """A headless Debian chromium driven by Selenium, or a skip."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        )
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--autoplay-policy=no-user-gesture-required", "--mute-audio", "--window-size=1280,1900",
    ):  # fmt: skip
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def log_in(browser, wait) -> None:
    """The page's login form, filled in: the app shows nothing before it."""
    from selenium.webdriver.common.by import By

    password = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "input[type=password]"))[0]
    assert "log in" in browser.find_element(By.TAG_NAME, "body").text
    assert not browser.find_elements(By.ID, "input-video")  # nothing of the app before the login
    browser.find_element(By.CSS_SELECTOR, "input[type=text]").send_keys(AUTH[0])
    password.send_keys(AUTH[1])
    browser.find_element(By.XPATH, "//button[normalize-space()='Login']").click()


def toasts(browser) -> list[str]:
    """The texts of the toasts shown now (read again if one closes while they are read)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for _ in range(10):
        try:
            return [toast.text for toast in browser.find_elements(By.CSS_SELECTOR, "[data-testid=toast-body]")]
        except StaleElementReferenceException:  # a toast closed between finding and reading it
            time.sleep(0.1)
    raise AssertionError("the toasts kept changing while they were read")


def close_toasts(browser) -> None:
    from selenium.webdriver.common.by import By

    for button in browser.find_elements(By.CSS_SELECTOR, "[data-testid=toast-close]"):
        button.click()


def choose_model(browser, wait, name: str) -> None:
    """The Model dropdown, opened and `name` picked."""
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, "#model input").click()
    options = wait.until(
        lambda b: [
            o for o in b.find_elements(By.CSS_SELECTOR, "[data-testid=dropdown-option]") if o.text.strip(" ✓\n") == name
        ]
    )
    options[0].click()
    wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#model input").get_attribute("value") == name)


def example_shown(browser) -> bool:
    """Whether the Examples box shows the sample clip: its preview loaded from the server."""
    return browser.execute_script(
        "const v = document.querySelector('#examples video'); return !!v && v.readyState >= 1 && v.videoWidth > 0;"
    )


def test_the_page_restores_the_example_and_cancels_a_long_job_in_chromium(server, tmp_path):
    """Open the page: a login form, not the app; log in. With the model "keep" (no weights here), Restore the
    example clip: one toast, the whole message (file, URL, folder, the --model hint). With preset:tiny: the
    output plays, one progress bar; then a long clip: Restore empties the last results, Cancel says
    "Cancelled", its workers end and no error shows; a text file named .mp4: one toast, in words; a file over
    the upload limit: refused with the limit. Reloading the page ends its session (its outputs are removed)
    and starts another, whose Examples box still shows the example and loads it. The screenshot (of the
    example's restoration) goes to tmp_path, and to docs/images/app.jpg (the README's) with KEEP_SCREENSHOTS=1."""
    url, process, temp = server
    os.environ.setdefault("SE_AVOID_STATS", "true")  # Selenium Manager: no usage statistics sent
    browser = chromium()
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    long_clip = write_clip(tmp_path / "long.mp4", sample_frames(MAX_FRAMES), fps=Fraction(30000, 1001))
    sessions = set(temp.glob("keep-app-*/sessions/*"))
    output = "document.querySelector('#output-video video')"
    try:
        browser.get(url)
        wait = WebDriverWait(browser, JOB_TIMEOUT_S, poll_frequency=0.2)
        log_in(browser, wait)
        limits = wait.until(lambda b: b.find_elements(By.ID, "limits"))[0]
        assert f"up to {MAX_UPLOAD_MB} MB" in limits.text

        def restore(video: Path | None = None) -> None:
            if video is None:  # the example
                browser.find_element(By.CSS_SELECTOR, "#examples button").click()
            else:
                field = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#input-video input[type=file]"))
                field[0].send_keys(str(video))
            wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#input-video video"))
            browser.find_element(By.ID, "restore-button").click()

        def one_toast(*parts: str) -> str:
            try:
                WebDriverWait(browser, 30).until(lambda b: any(parts[0] in t for t in toasts(b)))
            except TimeoutException:
                pytest.fail(f"no toast with {parts[0]!r}: {toasts(browser)}")
            time.sleep(1)  # a second toast for the same error would be there by now
            (text,) = toasts(browser)
            assert all(part in text for part in parts), text
            close_toasts(browser)
            return text

        wait.until(example_shown)
        choose_model(browser, wait, "keep")
        restore()
        message = one_toast(
            "KEEP-b76feb75.pth", "(URLError: <urlopen error", "releases/download/v1.0.0/KEEP", "put it in"
        )
        assert "pass its path with --model" in message  # whole: all of it after "<urlopen error ...>" too
        choose_model(browser, wait, "preset:tiny")
        browser.find_element(By.ID, "restore-button").click()  # the example again: a refusal leaves it there
        media = wait.until(
            lambda b: b.execute_script(
                f"const v = {output}; return v && v.readyState >= 1 ? [v.duration, v.videoWidth, v.videoHeight] : null;"
            )
        )
        assert media[0] == pytest.approx(75 * 1001 / 30000, abs=0.1) and media[1:] == [176, 144]
        browser.execute_script(f"{output}.play();")
        wait.until(lambda b: b.execute_script(f"return {output}.currentTime > 0;"))
        wait.until(lambda b: "face track" in b.find_element(By.ID, "summary").text)
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#faces img")) == 2)
        browser.execute_script(f"{output}.pause();")
        browser.save_screenshot(str(tmp_path / "app.png"))
        (page_session,) = set(temp.glob("keep-app-*/sessions/*")) - sessions

        browser.find_element(By.CSS_SELECTOR, "#input-video button[aria-label=Clear]").click()
        restore(long_clip)
        wait.until(lambda b: "restoring" in b.find_element(By.ID, "output-video").text)
        page = browser.find_element(By.TAG_NAME, "body").text
        assert page.count("restoring") == 1, page  # one progress bar
        assert not browser.find_element(By.ID, "summary").text and not browser.find_elements(
            By.CSS_SELECTOR, "#faces img"
        )
        workers = set(worker_pids(process.pid))
        assert len(workers) == 2
        browser.find_element(By.ID, "cancel-button").click()
        wait.until(lambda b: "Cancelled" in b.find_element(By.ID, "status").text)
        wait.until(lambda b: not workers & set(worker_pids(process.pid)))
        assert not toasts(browser)  # no error shown for a cancel
        assert "Traceback" not in browser.page_source

        fake = tmp_path / "fake.mp4"  # a text file renamed
        fake.write_text("not a video\n")
        browser.find_element(By.CSS_SELECTOR, "#input-video button[aria-label=Clear]").click()
        restore(fake)
        assert "Errno" not in one_toast("cannot open video fake.mp4: not a video FFmpeg can read")

        big = tmp_path / "big.mp4"
        big.write_bytes(bytes(int(1.2 * 2**20)))
        browser.find_element(By.CSS_SELECTOR, "#input-video button[aria-label=Clear]").click()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#input-video input[type=file]"))[0].send_keys(str(big))
        refused = (  # Gradio 6 refuses it in the browser, 5 on the server as it arrives
            f'File(s) exceed the maximum allowed size of {MAX_UPLOAD_MB:.1f} Mb: "big.mp4"'
            if GRADIO_6
            else f"exceeds the maximum allowed size of {MAX_UPLOAD_MB * 2**20} bytes: big.mp4"
        )
        wait.until(lambda b: any(refused in t for t in toasts(b)))

        browser.get(url)  # another session: the last one's end removes its outputs, never the example
        deadline = time.monotonic() + 60
        while page_session.exists():
            assert time.monotonic() < deadline, "the closed page's outputs were not removed"
            time.sleep(0.2)
        wait.until(example_shown)
        browser.find_element(By.CSS_SELECTOR, "#examples button").click()
        wait.until(lambda b: b.execute_script(
            "const v = document.querySelector('#input-video video'); return !!v && v.readyState >= 1;"
        ))  # fmt: skip
    finally:
        browser.quit()
    if os.environ.get("KEEP_SCREENSHOTS"):
        write_image(SCREENSHOT, read_image(tmp_path / "app.png"))


# ------------------------------------------------------------------------------------------ chosen faces
@pytest.fixture(scope="module")
def two_people(tmp_path_factory) -> tuple[Path, Path]:
    """A 12-frame clip of two real people (tests/footage.py: track 0 the astronaut on the right, track 1 the
    sample's man on the left, the larger face) and another frame of the man as the photo."""
    folder = tmp_path_factory.mktemp("two")
    photo = folder / "man.png"
    write_image(photo, sample_frames(1, start=60)[0])
    return write_clip(folder / "two.mp4", two_person_frames(12), fps=Fraction(25)), photo


def changed_halves(source: Path, output: str | Path) -> tuple[float, float]:
    """Mean absolute difference of the decoded output from the decoded input: left half (the man), right half."""
    with av.open(str(source)) as a, av.open(str(output)) as b:
        before = np.stack([f.to_ndarray(format="rgb24") for f in a.decode(video=0)]).astype(int)
        after = np.stack([f.to_ndarray(format="rgb24") for f in b.decode(video=0)]).astype(int)
    difference = np.abs(after - before)
    return difference[:, :, :176].mean(), difference[:, :, 176:].mean()


def test_the_api_restores_only_the_person_in_the_photo(server, two_people):
    url, _, _ = server
    api = client(url)
    clip, photo = two_people
    assert "Upload a photo of the person" in refusal(api, clip, faces="photo")
    assert "track ids are 0 or more" in refusal(api, clip, faces="track ids", track_ids="0,-1")
    video, _, faces, summary = restore(api, clip, faces="photo", photo=handle_file(str(photo)))
    man, astronaut = changed_halves(clip, video_path(video))
    assert man > 5 and astronaut < 3 and man > 3 * astronaut  # the astronaut differs by the encoding alone
    captions = [face["caption"].split(", frame")[0] for face in faces]
    assert captions == [
        "track 0 before (left as it is", "track 0 after (left as it is", "track 1 before (restored",
        "track 1 after (restored",
    ]  # fmt: skip
    assert "track 1: 12 frames, identity distance 0." in summary and "left as it is" in summary


def test_the_page_restores_only_the_largest_face_in_chromium(server, two_people, tmp_path):
    """Upload the two-person clip, choose Faces: largest, Restore: the gallery shows both tracks, the summary
    which one was restored, and the video the page plays changed the man's face only."""
    url, _, _ = server
    os.environ.setdefault("SE_AVOID_STATS", "true")
    browser = chromium()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    clip, _ = two_people
    try:
        browser.get(url)
        wait = WebDriverWait(browser, JOB_TIMEOUT_S, poll_frequency=0.2)
        log_in(browser, wait)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#input-video input[type=file]"))[0].send_keys(str(clip))
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#input-video video"))
        browser.find_element(By.CSS_SELECTOR, "#faces-choice input[value=largest]").click()
        browser.find_element(By.ID, "restore-button").click()
        wait.until(lambda b: "face track" in b.find_element(By.ID, "summary").text)
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#faces img")) == 4)
        text = browser.find_element(By.ID, "summary").text
        assert "track 0: 12 frames, left as it is" in text and "track 1: 12 frames, restored" in text
        source = browser.execute_script("return document.querySelector('#output-video video').src;")
        cookies = "; ".join(f"{c['name']}={c['value']}" for c in browser.get_cookies())  # the login's session
        request = urllib.request.Request(source, headers={"Cookie": cookies})
        with urllib.request.urlopen(request, timeout=30) as response:
            played = tmp_path / "played.mp4"
            played.write_bytes(response.read())
        assert "Traceback" not in browser.page_source
    finally:
        browser.quit()
    man, astronaut = changed_halves(clip, played)
    assert man > 5 and astronaut < 3 and man > 3 * astronaut


def test_a_request_changing_only_fidelity_and_upscale_restores_at_once_on_the_kept_pipeline(server, tmp_path):
    """Fidelity and upscale are the run's own (`keep.pipeline.RunOptions`): a request that changes only them starts
    restoring within a second of being sent, on the network and worker processes of the request before it (the app
    logs each pipeline it builds: none for the second request, at most one for both)."""
    url, process, temp = server
    server_log = temp.parent / "server.log"
    api = client(url)
    clip = write_clip(tmp_path / "short.mp4", sample_frames(8))
    builds = server_log.read_text().count("pipeline built")
    restore(api, clip)  # on the pipeline the tests before built, else on a new one
    built = server_log.read_text().count("pipeline built")
    workers = set(worker_pids(process.pid))
    job = api.submit(video_input(clip), fidelity=0.5, upscale=2, api_name="/restore")
    sent = time.monotonic()
    while not job.done() and not any(unit.desc == "restoring" for unit in job.status().progress_data or []):
        assert time.monotonic() < sent + JOB_TIMEOUT_S, "the job made no progress"
        time.sleep(0.02)
    waited = time.monotonic() - sent
    video, *_ = job.result(timeout=JOB_TIMEOUT_S)
    print(f"restoring began {waited:.2f} s after the request")
    assert waited < 1.0, f"restoring began {waited:.2f} s after the request"
    assert workers and set(worker_pids(process.pid)) == workers  # no worker started, none stopped
    assert 1 <= built <= builds + 1 and server_log.read_text().count("pipeline built") == built
    source = stream_facts(clip)
    assert stream_facts(video_path(video))["size"] == (2 * source["size"][0], 2 * source["size"][1])
