"""The pipeline operated from the Prefect UI, as a user would: a real Prefect server and process worker on
127.0.0.1, `prefect deploy` of the cpu-smollm2 deployment, runs of the smoke recipe through it, then headless
Chromium (Debian's chromium and chromium-driver) on the UI's pages.

The runs, in order: iterations 1 and 2; iteration 2 again with a DeepSpeed JSON that leaves a field "auto"
which no recipe value fills (a mistake only the launched training job finds: it fails there); iteration 3
killed with SIGKILL once its generate stage has finished (the worker reports it Crashed), which the browser
retries. Screenshots go to .cache/test-ui/ ($UI_SCREENSHOTS).

`make test-ui`; about 3 minutes on 2 cores."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .stack import REPO, Stack, prefect_stack

pytestmark = pytest.mark.ui

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENSHOTS = Path(os.environ.get("UI_SCREENSHOTS", REPO / ".cache" / "test-ui"))
DEPLOYMENT = "sppo-iteration/cpu-smollm2"
RUN = "ui"
STAGE_TASKS = ("generate", "rank", "build-parquet", "train", "evaluate")
# A DeepSpeed JSON that exists (the flow's pre-flight passes) but whose "auto" field no recipe value fills:
# the launched job finds the mistake, so its output must reach the UI.
BROKEN_DS = {"train_batch_size": "auto", "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": "auto"}}}
CAUSE = 'no recipe value fills the "auto" field(s) scheduler.params.warmup_num_steps'


class Runs:
    """The flow runs the tests look at, made once for the module."""

    def __init__(self, stack: Stack, store: Path):
        self.stack, self.store = stack, store
        self.ids: dict[str, str] = {}

    def start(self, iteration: int | str, *overrides: str) -> str:
        parameters = {
            "run": RUN,
            "iteration": iteration,
            "config": "configs/smoke.yaml",
            "overrides": [f"store={self.store}", *overrides],
        }
        return self.stack.run_deployment(DEPLOYMENT, parameters)

    def stage_dir(self, iteration: int, stage: str) -> Path:
        return self.store / RUN / f"iter-{iteration:03d}" / stage


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Iterator[Runs]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail(
            "make test-ui needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver"
        )
    home = tmp_path_factory.mktemp("prefect")
    with prefect_stack(home) as stack:
        # Both pools, as `make deploy` makes them (prefect deploy checks a deployment's pool first).
        made = stack.cli("work-pool", "create", "sppo-gpu", "--type", "process")
        assert made.returncode == 0, made.stdout + made.stderr
        deployed = stack.cli("--no-prompt", "deploy", "--name", DEPLOYMENT)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        made = Runs(stack, tmp_path_factory.mktemp("store"))
        for iteration in (1, 2):
            made.ids[f"iter{iteration}"] = run_id = made.start(iteration)
            state = stack.wait(run_id)
            assert state["state_type"] == "COMPLETED", (state["name"], state["state"]["message"], stack.logs)
        broken = tmp_path_factory.mktemp("deepspeed") / "zero3-broken.json"
        broken.write_text(json.dumps(BROKEN_DS))
        made.ids["failed"] = made.start(2, f"train.deepspeed.config={broken}")
        stack.wait(made.ids["failed"])
        made.ids["crashed"] = crash_after_generate(made)
        yield made


def crash_after_generate(runs: Runs) -> str:
    """Start iteration 3 (trained 6 epochs, so it lasts a while) and SIGKILL its flow-run process, whose pid
    is in the iteration's lock, once generate has committed. Started as a schedule starts it, with `next`:
    iterations 1 and 2 are done, so it works on (and is renamed after) iteration 3."""
    run_id = runs.start("next", "train.epochs=6")
    manifest = runs.stage_dir(3, "generate") / "manifest.json"
    deadline = time.monotonic() + 300
    while not manifest.exists():
        assert time.monotonic() < deadline, "iteration 3's generate never finished"
        time.sleep(0.05)
    holder = json.loads((runs.store / RUN / "iter-003.lock").read_text())
    os.kill(holder["pid"], signal.SIGKILL)
    state = runs.stack.wait(run_id)
    assert state["state_type"] == "CRASHED", state["state"]
    return run_id


@pytest.fixture(scope="module")
def browser(runs) -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # Debian's browser: no browser download
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(browser, runs: Runs, path: str, ready: Callable) -> None:
    """Load a UI page and wait until `ready(browser)` holds (the UI renders after its API calls)."""
    browser.get(runs.stack.ui + path)
    wait_for(browser, ready)


def wait_for(browser, ready: Callable, timeout_s: float = 60) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, timeout_s, poll_frequency=0.5).until(ready)


def page_text(browser) -> str:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.TAG_NAME, "body").text


def shows(*texts: str) -> Callable:
    return lambda browser: all(t in page_text(browser) for t in texts)


def click(browser, label: str, index: int = 0) -> None:
    """Click the `index`-th visible button or tab whose text is `label`."""
    from selenium.webdriver.common.by import By

    found = [
        e
        # The UI's tabs are list items (li.p-tab), its buttons buttons.
        for e in browser.find_elements(By.XPATH, "//button | //li[contains(@class, 'p-tab')]")
        if e.text.strip() == label and e.is_displayed()
    ]
    assert len(found) > index, f"no button or tab {label!r} #{index} on {browser.current_url}"
    found[index].click()


def scroll_to(browser, text: str) -> None:
    """Scroll the first log row showing `text` to the middle of the window (for the screenshot)."""
    from selenium.webdriver.common.by import By

    rows = browser.find_elements(By.XPATH, f"//*[contains(@class, 'log-row__content')][contains(., '{text}')]")
    assert rows, f"no log row shows {text!r} on {browser.current_url}"
    element = rows[0]
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    time.sleep(0.5)


def image_loaded(browser) -> bool:
    """Some <img> on the page has loaded its picture (naturalWidth is 0 for a URL the browser could not load)."""
    from selenium.webdriver.common.by import By

    return any(
        img.get_attribute("naturalWidth") not in (None, "0") for img in browser.find_elements(By.TAG_NAME, "img")
    )


def screenshot(browser, name: str) -> None:
    browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def latest_artifact(runs: Runs, key: str) -> dict:
    artifacts = runs.stack.artifacts(key=key)
    assert artifacts, f"no artifact {key!r}"
    return artifacts[-1]


@pytest.mark.parametrize(
    ("value", "says"),
    [(None, "SPPO_STORE is not set: export SPPO_STORE="), ("s4://bucket/sppo", "unknown scheme 's4'")],
)
def test_deploying_without_a_usable_store_fails_naming_the_variable(runs, value, says):
    env = {"SPPO_STORE": value} if value else {}
    deployed = runs.stack.cli(
        "--no-prompt", "deploy", "--name", "sppo-iteration/mistral-7b", env=env, unset=["SPPO_STORE"]
    )
    output = deployed.stdout + deployed.stderr
    assert deployed.returncode != 0 and says in output, output


def test_flow_run_page_shows_its_name_and_the_five_stages(runs, browser):
    run_id = runs.ids["iter2"]
    open_page(browser, runs, f"/runs/flow-run/{run_id}", shows(f"{RUN}-iter-002", "Completed"))
    screenshot(browser, "flow-run")
    click(browser, "Task Runs")
    wait_for(browser, shows(*(f"{t}-" for t in STAGE_TASKS)))
    screenshot(browser, "flow-run-task-runs")
    assert [t["name"].rsplit("-", 1)[0] for t in runs.stack.task_runs(run_id)] == list(STAGE_TASKS)
    # On the run's Artifacts tab: generate's and train's progress, finished, and a link to each stage folder.
    artifacts = runs.stack.artifacts(flow_run_id=run_id)
    progress = sorted(a["description"].split(":")[0] for a in artifacts if a["type"] == "progress")
    assert progress == ["generate, iteration 2", "train"] and all(
        a["data"] == 100 for a in artifacts if a["type"] == "progress"
    )
    links = [a for a in artifacts if "the stage folder" in (a["description"] or "")]
    assert len(links) == 5 and all("file://" in a["data"] for a in links)


def test_metrics_table_has_one_row_per_iteration(runs, browser):
    from selenium.webdriver.common.by import By

    artifact = latest_artifact(runs, f"{RUN}-metrics")
    history = [a["flow_run_id"] for a in runs.stack.artifacts(key=f"{RUN}-metrics")]
    assert history == [runs.ids["iter1"], runs.ids["iter2"]], "one version per iteration that did work, in order"
    open_page(browser, runs, f"/artifacts/artifact/{artifact['id']}", shows("win vs base [95%]", "2 Items"))
    rows = browser.find_elements(By.CSS_SELECTOR, "table tbody tr")
    assert len(rows) == 2, [r.text for r in rows]
    assert rows[0].text.startswith("1") and rows[1].text.startswith("2")
    assert "nan" not in page_text(browser).lower()
    screenshot(browser, "metrics-table")


def test_plot_image_loads(runs, browser):
    from selenium.webdriver.common.by import By

    artifact = latest_artifact(runs, f"{RUN}-plot")
    open_page(browser, runs, f"/artifacts/artifact/{artifact['id']}", image_loaded)
    widths = [int(img.get_attribute("naturalWidth")) for img in browser.find_elements(By.TAG_NAME, "img")]
    assert max(widths) > 500, widths
    screenshot(browser, "metrics-plot")


def test_a_plot_in_an_s3_store_loads_through_its_presigned_url(runs, browser, monkeypatch):
    """What an S3 store publishes: the PNG put under <run>/ui/ and a presigned URL in the image artifact,
    which the UI's page must load from the S3 endpoint (moto on 127.0.0.1 here)."""
    import s3fs

    from sppo.report import collect
    from sppo.store import ArtifactStore, RunLayout
    from tasks.artifacts import plot_url

    from ..s3_server import moto_s3

    with moto_s3("ui-bucket") as relay:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{relay.port}")
        for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        s3fs.S3FileSystem.clear_instance_cache()
        store = ArtifactStore("s3://ui-bucket/sppo")
        results = collect(ArtifactStore(runs.store), {RUN: RUN})
        url = plot_url(store, RunLayout(store, RUN), results, 2)
        assert url.startswith(f"http://127.0.0.1:{relay.port}/ui-bucket/sppo/{RUN}/ui/metrics-iter-002.png?")
        assert "Signature=" in url  # presigned (SigV2 or SigV4)
        artifact = runs.stack.post("/artifacts/", {"type": "image", "key": f"{RUN}-s3-plot", "data": url})
        open_page(
            browser,
            runs,
            f"/artifacts/artifact/{artifact['id']}",
            image_loaded,
        )
        screenshot(browser, "metrics-plot-s3")
        s3fs.S3FileSystem.clear_instance_cache()


def test_samples_render(runs, browser):
    artifact = latest_artifact(runs, f"{RUN}-samples")
    open_page(browser, runs, f"/artifacts/artifact/{artifact['id']}", shows("Prompt 1", "New policy (pi_2)"))
    text = page_text(browser)
    assert "Verdict:" in text and "Reference (pi_1)" in text and "Training pairs of iteration 2" in text
    assert "Chosen, win rate" in text and "##" not in text, "markdown must render, not show as source"
    screenshot(browser, "samples")


def test_failed_run_shows_its_cause_and_was_not_retried(runs, browser):
    run_id = runs.ids["failed"]
    run = runs.stack.flow_run(run_id)
    assert run["state_type"] == "FAILED" and CAUSE in run["state"]["message"]
    (train,) = [t for t in runs.stack.task_runs(run_id) if t["name"].startswith("train-")]
    assert train["run_count"] == 1, "a recipe mistake must not be retried"
    assert CAUSE in train["state"]["message"]
    # The training job's own traceback is in the task's log, not only in the worker's output.
    logs = runs.stack.logs_of(run_id)
    assert any("ValueError: " in entry and CAUSE in entry for entry in logs)
    # The first error a reader meets is the cause in one line: the stage, what went wrong, what to do.
    first_error = runs.stack.errors_of(run_id)[0]
    assert first_error.startswith("train failed: ") and CAUSE in first_error and "not retried" in first_error
    assert "\n" not in first_error
    # The job's traceback is one entry, not one per line.
    assert not any(entry.strip().startswith('File "') for entry in logs), "a traceback was split into lines"
    open_page(browser, runs, f"/runs/flow-run/{run_id}", shows("Failed", "train failed: "))
    scroll_to(browser, "train failed: ")
    screenshot(browser, "failed-run-logs")


def test_retry_in_the_ui_resumes_a_crashed_run(runs, browser):
    run_id = runs.ids["crashed"]
    generate = runs.stage_dir(3, "generate") / "manifest.json"
    before = generate.read_bytes()
    open_page(browser, runs, f"/runs/flow-run/{run_id}", shows(f"{RUN}-iter-003", "Crashed"))
    screenshot(browser, "crashed-run")
    click(browser, "Retry")
    wait_for(browser, shows(f"Retry {RUN}-iter-003?"))
    screenshot(browser, "retry-dialog")
    click(browser, "Retry", index=1)  # the dialog's
    state = runs.stack.wait(run_id, timeout_s=300, states={"COMPLETED", "FAILED", "CRASHED"})
    assert state["state_type"] == "COMPLETED", (
        state["state"],
        runs.stack.logs_of(run_id)[-40:],
        (runs.stack.logs / "worker.log").read_text()[-3000:],
    )
    assert generate.read_bytes() == before, "the retry redid a finished stage"
    logs = runs.stack.logs_of(run_id)
    assert any(line.startswith("generate: reused, finished at") for line in logs), logs
    assert (runs.stage_dir(3, "evaluate") / "manifest.json").exists()
    open_page(browser, runs, f"/runs/flow-run/{run_id}", shows(f"{RUN}-iter-003", "Completed"))
    screenshot(browser, "retried-run")
