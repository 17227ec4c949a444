"""The Prefect UI in a real browser: open the evaluate deployment, fill in its form, Run, watch it complete.

Debian's chromium, driven by Playwright through ``executable_path`` (Playwright's own browser download does
not work here). Screenshots go to the test's tmp dir and are copied to /tmp/zsr-ui-screenshot.png (the
completed run) and /tmp/zsr-ui-results.png (its results table artifact).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_prefect_server import CORPUS, TESTSET, Served, prepare_home, warehouse_runs

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [  # no network beyond loopback here: nothing in the background may try to reach out
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RUN_TIMEOUT_MS = 240_000


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if not Path(CHROMIUM).is_file():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium chromium-driver)")
    home = tmp_path_factory.mktemp("ui") / "home"
    home.mkdir()
    stack = Served(home, "zsr-ui", "--grace", "15")
    try:
        prepare_home(home)
        yield stack.ready()
    finally:
        stack.close()


def test_run_evaluate_from_the_ui_form(served: Served, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    deployment = served.deployment("evaluate")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            page.goto(f"{served.ui}/deployments/deployment/{deployment['id']}", wait_until="networkidle")
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_text("Custom run").click()
            page.wait_for_url("**/run**")

            fields = page.locator("textarea")  # the string parameters, in signature order
            fields.nth(0).fill(CORPUS)
            fields.nth(1).fill(TESTSET)
            for chip in ("hybrid", "RR@10", "AP@100", "P@10"):  # keep dense, bm25 / nDCG@10, R@100
                page.locator(".p-tag", has_text=re.compile(f"^{re.escape(chip)}$")).locator(
                    ".p-tag__dismiss"
                ).click()
            page.screenshot(path=tmp_path / "form.png", full_page=True)
            page.get_by_role("button", name="Submit").click()

            view = page.locator("#prefect-design-toast-app").get_by_role("button", name="View run").first
            view.wait_for(state="visible")
            page.wait_for_timeout(800)  # the toast slides in
            view.click(force=True)
            page.wait_for_url("**/runs/flow-run/**")
            run_id = page.url.split("/runs/flow-run/", 1)[1].split("?", 1)[0]

            final = page.locator(".state-badge").filter(
                has_text=re.compile("^(Completed|Failed|Crashed|Cancelled)$")
            )
            expect(final.first).to_be_visible(timeout=RUN_TIMEOUT_MS)  # the page follows the run live
            expect(page.locator(".state-badge.state--completed").first).to_be_visible()
            expect(page.get_by_text(f"evaluate-{CORPUS}-{TESTSET}").first).to_be_visible()
            page.wait_for_timeout(2_000)  # let the run graph settle
            page.screenshot(path=tmp_path / "flow-run.png")

            page.get_by_text("Artifacts", exact=True).click()
            page.get_by_text(f"evaluate-{CORPUS}-{TESTSET}-results").first.click()
            page.wait_for_url("**/artifacts/artifact/**")
            expect(page.get_by_text("Δ nDCG@10")).to_be_visible()
            expect(page.get_by_role("table").get_by_text("bm25", exact=True)).to_be_visible()
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(1_000)  # the page fades in
            page.screenshot(path=tmp_path / "results.png", full_page=True)
        except BaseException:
            page.screenshot(path=tmp_path / "failure.png", full_page=True)
            shutil.copy(tmp_path / "failure.png", "/tmp/zsr-ui-failure.png")
            raise
        finally:
            browser.close()
    shutil.copy(tmp_path / "flow-run.png", "/tmp/zsr-ui-screenshot.png")
    shutil.copy(tmp_path / "results.png", "/tmp/zsr-ui-results.png")

    run = served.flow_run(run_id)
    assert run["state"]["type"] == "COMPLETED" and run["name"] == f"evaluate-{CORPUS}-{TESTSET}"
    params = run["parameters"]
    assert (params["corpus"], params["testset"]) == (CORPUS, TESTSET)
    assert (params["methods"], params["metrics"]) == (["dense", "bm25"], ["nDCG@10", "R@100"])
    published = [r for r in warehouse_runs(served.home) if "-evaluate-" in r["eval_id"]]
    assert [(r["method"], r["measures"]) for r in published] == [("dense", 2), ("bm25", 2)]
    assert served.stop() == 0
