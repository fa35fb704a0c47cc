"""The operator's dashboard (`GET /ui`) in a real browser: headless Chromium from Debian's packages,
driven by Playwright. After a replicated table is created, the page lists its stream as completed;
once the peer cannot be reached it shows the stream retrying with its failure; its Pause and Resume
buttons act on the stream. Screenshots are kept in target/test-artifacts."""
import json
import os
import shutil
import urllib.request

import pyarrow as pa
import pytest

from conftest import free_port, http_json, start_dev, stop_dev
from test_clients import pyiceberg_catalog
from test_replication import wait_completed

ARTIFACTS = os.environ.get(
    "FLOE_TEST_ARTIFACTS", os.path.join(os.path.dirname(__file__), "../../target/test-artifacts"))


def chromium():
    """The system Chromium, or a skip (a failure where CI requires the browser test)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        if os.environ.get("FLOE_REQUIRE_BROWSER"):
            pytest.fail("FLOE_REQUIRE_BROWSER is set but Chromium or Playwright is missing")
        pytest.skip("dashboard test skipped: install Debian's chromium and Playwright")
    return path


def put_json(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="PUT",
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


def test_the_dashboard_shows_streams_completed_then_retrying_and_acts_on_them():
    executable = chromium()
    from playwright.sync_api import sync_playwright

    os.makedirs(ARTIFACTS, exist_ok=True)
    proc, floe = start_dev()
    try:
        # The page itself holds no data: anyone may fetch it, under a strict policy.
        with urllib.request.urlopen(f"{floe.url}/ui", timeout=10) as r:
            assert r.headers["content-type"].startswith("text/html")
            assert "script-src 'self'" in r.headers["content-security-policy"]

        catalog = pyiceberg_catalog(floe, "dashboard")
        catalog.create_namespace("dash_ns")
        table = catalog.create_table(("dash_ns", "t"), schema=pa.schema([("id", pa.int64())]))
        table.append(pa.table({"id": [1, 2, 3]}))
        wait_completed(floe, "dash_ns", "t")

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable,
                                        args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{floe.url}/ui")
            row = 'tr[data-table="demo.dash_ns.t"][data-peer="replica"]'
            page.wait_for_selector(f'{row}[data-state="completed"]', timeout=20000)
            assert page.text_content("#region") == "primary"
            assert page.locator('#peers tr[data-peer="replica"]').count() == 1
            # The OpenAPI document is browsable from the page.
            page.wait_for_selector('#operations td:text-is("/management/v1/replication")')
            assert page.get_attribute("#openapi-link", "href") == "/management/v1/openapi.json"
            page.screenshot(path=os.path.join(ARTIFACTS, "dashboard-completed.png"), full_page=True)

            # The peer becomes unreachable: the next change cannot be delivered.
            peer = http_json(f"{floe.url}/management/v1/peers/replica")
            put_json(f"{floe.url}/management/v1/peers/replica", {
                "region": "replica", "base-url": f"http://127.0.0.1:{free_port()}",
                "credential": "any-token-the-closed-port-never-sees",
                "warehouses": [{"warehouse": w["warehouse"], "storage-root": w["storage-root"]}
                               for w in peer["warehouses"]]})
            table.append(pa.table({"id": [4]}))
            page.wait_for_selector(f'{row}[data-state="retrying"]', timeout=30000)
            failure = page.text_content(f"{row} td.failure")
            assert failure and "127.0.0.1" in failure, failure
            behind = page.text_content(f"{row} td:nth-child(4)")
            assert behind == "1", behind
            page.screenshot(path=os.path.join(ARTIFACTS, "dashboard-retrying.png"), full_page=True)

            # Its buttons act on the stream.
            page.click(f'{row} button[data-action="pause"]')
            page.wait_for_selector(f'{row}[data-state="paused"]', timeout=10000)
            page.click(f'{row} button[data-action="resume"]')
            page.wait_for_selector(f'{row}[data-state="retrying"]', timeout=30000)
            browser.close()
    finally:
        stop_dev(proc)
