"""The HTML report and the live dashboard in a real browser (headless Chromium via Selenium):
the page loads, its charts are non-empty inline SVG, the console stays clean, a screenshot is
saved under test-artifacts/, and the dashboard refuses a request without credentials.

Needs Debian's chromium and chromium-driver; nothing is downloaded at test time (the driver
path is given, so Selenium Manager never runs)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from nurture_mail.database import open_database

from . import report_dataset
from .conftest import need_service
from .report_ledger import build_alpha
from .test_web import free_port, wait_for_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TOKEN = "dash-token-123"


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        need_service("chromium: apt-get install chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1280,900", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def check_charts(driver, minimum: int) -> None:
    from selenium.webdriver.common.by import By

    svgs = driver.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(svgs) >= minimum
    for svg in svgs:
        size = svg.size
        assert size["width"] > 100 and size["height"] > 20, size
        assert svg.find_elements(By.CSS_SELECTOR, "rect, text")  # drawn, not an empty frame
    bars = driver.find_elements(By.CSS_SELECTOR, "svg.chart rect[fill='#1f5f99']")
    assert any(float(b.get_attribute("height") or b.get_attribute("width") or 0) > 0 for b in bars)


def screenshot(driver, name: str) -> Path:
    """The whole page, not just the window."""
    ARTIFACTS.mkdir(exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(900, height + 120), 6000))
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    return path


def test_html_report_opens_offline_with_charts(browser, tmp_path):
    root = tmp_path / "demo"
    report_dataset.build(root)
    out = root / "report.html"
    report_dataset.nurture(root, "--now", "2027-06-01T12:00:00Z", "report", "--format", "html", "-o", str(out))
    html = out.read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html
    browser.get(out.as_uri())
    assert "nurture report" in browser.title
    check_charts(browser, minimum=5)
    body = browser.find_element("tag name", "body").text
    assert "silver-medalists" in body and "Warm pool" in body
    assert "not significant yet" in body
    assert console_errors(browser) == []
    screenshot(browser, "report.png")


def test_dashboard_live_behind_auth(browser, tmp_path, db_url):
    db = open_database(db_url)
    try:
        build_alpha(db)
    finally:
        db.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env.update(NURTURE_SERVE_TOKEN=TOKEN, NURTURE_UNSUBSCRIBE_SECRET="s", NURTURE_NOW="2027-02-01T12:00:00Z")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nurture_mail", "--database", db_url, "serve", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for_port(proc, port, time.monotonic() + 30)
        base = f"http://127.0.0.1:{port}"
        refused = httpx.get(f"{base}/", timeout=10)
        assert refused.status_code == 401 and "Alpha" not in refused.text
        assert httpx.get(f"{base}/report?token=wrong", timeout=10).status_code == 401
        ok = httpx.get(f"{base}/", headers={"authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert ok.status_code == 200
        assert "Alpha &lt;campaign&gt;" in ok.text and "<campaign>" not in ok.text

        browser.get(f"{base}/")  # the browser without credentials: refused too
        assert "Authentication required" in browser.find_element("tag name", "body").text
        browser.get_log("browser")  # the expected 401 is not the page's fault; start afresh

        browser.get(f"{base}/?token={TOKEN}")
        assert "nurture" in browser.title
        check_charts(browser, minimum=5)
        body = browser.find_element("tag name", "body").text
        assert "Alpha <campaign>" in body  # escaped in HTML, shown as text
        assert "50.0%" in body and "57.1%" in body  # s1 and the campaign's reply rates
        assert "c6@example.com" in body  # the pool table
        assert console_errors(browser) == []
        screenshot(browser, f"dashboard-{db_url.split(':')[0].split('+')[0]}.png")
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
