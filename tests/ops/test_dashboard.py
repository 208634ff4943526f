"""The dashboard in a real browser (Debian's chromium driven by Playwright) on a real broker.

Screenshots go to ``$DURAFKA_ARTIFACTS/dashboard/`` (default ``build/artifacts/dashboard/``
in the checkout), which CI keeps. Chromium is installed with apt-get when it is
missing (CI machines are fresh; Playwright's own browser download cannot work here).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import durafka
from durafka.api import ApiTokens
from durafka.management import Management
from durafka.status import RuntimeStatus
from tests.ops.apps import Order
from tests.support.api import serving

TOKEN = "dashboard-token-0123456789"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(
    os.environ.get("DURAFKA_ARTIFACTS", Path(__file__).resolve().parents[2] / "build/artifacts")
)


def _ensure_chromium() -> None:
    if CHROMIUM.exists():
        return
    if shutil.which("apt-get") is None:
        pytest.fail("chromium is missing and there is no apt-get to install it", pytrace=False)
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}", pytrace=False)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _ensure_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def bootstrap(kafka_bootstrap: str) -> str:
    """The dashboard is tested on the real broker."""
    return kafka_bootstrap


@pytest.fixture
def shots() -> Path:
    folder = ARTIFACTS / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_operate_instances_from_the_dashboard(
    browser: Any, running_app: durafka.App, management: Management, shots: Path
) -> None:
    with running_app.sync_client() as client:
        first = client.start_new("approval", Order("lamp", 1), instance_id="order-1")
        second = client.start_new("approval", Order("desk", 2), instance_id="order-2")
        failed = client.start_new("failing", "out of stock", instance_id="broken-1")
        done = client.start_new("parent", "Ana", instance_id="greeting-1")
        client.wait_for_status(failed)
        client.wait_for_status(done)
        for iid in (first, second):
            client.status_view.wait_for(
                iid, lambda s: s.runtime_status is RuntimeStatus.RUNNING, 60
            )

    with serving(management, ApiTokens(admin=TOKEN), sample_seconds=0.5) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        console: list[str] = []
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: console.append(f"page error: {error}"))
        try:
            _walk(page, url, shots)
        except Exception:
            page.screenshot(path=str(shots / "failure.png"), full_page=True)
            print("browser console:", *console, sep="\n  ")
            raise
        finally:
            page.close()

    assert management.get_instance(first).status is RuntimeStatus.TERMINATED
    assert management.get_instance(second).status is RuntimeStatus.COMPLETED


def _walk(page: Any, url: str, shots: Path) -> None:
    """Sign in, filter, raise an event, terminate, read a failure and the cluster page."""
    page.goto(url)
    page.fill("input[name=token]", TOKEN)
    page.click("#login button")

    # The list: every instance, live counts.
    page.wait_for_selector("tr[data-instance='greeting-1-child']")
    rows = page.locator("tr[data-instance]")
    assert rows.count() == 5
    page.wait_for_function(
        "document.querySelector('[data-testid=count-RUNNING]').textContent === '2'"
    )
    page.screenshot(path=str(shots / "01-instances.png"))

    # Filter by status, then by id prefix.
    page.click(".chip[data-status=RUNNING]")
    page.wait_for_function("document.querySelectorAll('tr[data-instance]').length === 2")
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.instance)")) == [
        "order-1",
        "order-2",
    ]
    page.fill("#f-prefix", "order-2")
    page.click("#f-apply")
    page.wait_for_function("document.querySelectorAll('tr[data-instance]').length === 1")
    page.screenshot(path=str(shots / "02-filtered.png"))

    # Open an instance, raise the event it waits for, see it complete (live update).
    page.click("a:text('order-2')")
    page.wait_for_selector("[data-testid=status] >> text=RUNNING")
    page.click("#a-raise")
    page.fill("dialog input[name=event]", "approve")
    page.fill("dialog textarea[name=data]", '{"by": "the dashboard"}')
    page.click("#dialog-ok")
    page.wait_for_selector("[data-testid=status] >> text=COMPLETED", timeout=60_000)
    output = page.text_content("[data-testid=output]") or ""
    assert '"by": "the dashboard"' in output and "Hello, desk!" in output
    page.wait_for_selector("[data-testid=timeline] .bar.completed")
    page.screenshot(path=str(shots / "03-completed.png"), full_page=True)

    # Terminate the other one, after confirming.
    page.goto(f"{url}/#/instance/order-1")
    page.wait_for_selector("[data-testid=status] >> text=RUNNING")
    page.click("#a-terminate")
    page.fill("dialog input[name=reason]", "cancelled by the customer")
    page.click("#dialog-ok")
    page.wait_for_selector("[data-testid=status] >> text=TERMINATED", timeout=60_000)
    assert "cancelled by the customer" in (page.text_content("[data-testid=output]") or "")
    page.screenshot(path=str(shots / "04-terminated.png"), full_page=True)

    # A failure shows its traceback; a parent links its child.
    page.goto(f"{url}/#/instance/broken-1")
    page.wait_for_selector("[data-testid=traceback]")
    assert "ValueError: out of stock" in (page.text_content("[data-testid=traceback]") or "")
    page.goto(f"{url}/#/instance/greeting-1")
    page.click("a:text('greeting-1-child')")
    page.wait_for_selector("[data-testid=instance-id] >> text=greeting-1-child")

    # The cluster page: partitions with owners.
    page.click("nav >> text=Cluster")
    page.wait_for_selector("[data-testid=partitions] tbody tr")
    page.screenshot(path=str(shots / "05-cluster.png"), full_page=True)
