"""The pages in a real browser: Debian's chromium, driven by chromedriver through python3-selenium, against real
servers and a real Redis. A failing test leaves a screenshot and the page's HTML under its temp dir."""

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import wait_for_job
from tests.test_web import add_token, scenario

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
COLOURED = "printf 'plain \\033[32mgreen words\\033[0m \\033[1;31mbold red\\033[0m\\n'\n"


@pytest.fixture
def browser(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WebDriver]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("chromium and chromium-driver are missing: `make test` installs them (APT_PACKAGES)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1200,900"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    failed_before = request.session.testsfailed
    yield driver
    if request.session.testsfailed > failed_before:  # this test failed: keep what the browser showed
        driver.save_screenshot(str(tmp_path / "failure.png"))
        (tmp_path / "failure.html").write_text(driver.page_source)
        print(f"screenshot of the failure: {tmp_path / 'failure.png'}")
    driver.quit()


def until(driver: WebDriver, check: Callable[[WebDriver], object], timeout: float = 15, what: str = "") -> object:
    # an element read while the page navigates is stale: that round does not count, the next one reads the new page
    wait = WebDriverWait(driver, timeout, poll_frequency=0.05, ignored_exceptions=[StaleElementReferenceException])
    return wait.until(check, what)


def log_lines(driver: WebDriver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#log .line'), l => l.textContent.slice(l.firstChild.textContent.length))"
    )


def test_overview_run_follow_colours_and_cancel(server, api, browser):
    script = COLOURED + 'echo "hello $GREETING"\nwhile :; do echo tick; sleep 0.2; done\n'
    scenario(api, script)
    browser.get(server.url + "/")  # what a newcomer types: the browser is sent to the pages
    assert browser.current_url == server.url + "/ui/" and browser.find_element(By.TAG_NAME, "h1").text == "Overview"
    browser.find_element(By.LINK_TEXT, "Repos").click()
    browser.find_element(By.LINK_TEXT, "demo").click()
    browser.find_element(By.LINK_TEXT, "build.sh").click()
    browser.find_element(By.ID, "params").send_keys("GREETING=from the page")
    browser.find_element(By.CSS_SELECTOR, "#run button[type=submit]").click()
    until(browser, lambda d: "/ui/jobs/" in d.current_url, what="the Run button leads to the job's page")
    job_id = int(browser.current_url.rsplit("/", 1)[1])
    until(browser, lambda d: "hello from the page" in log_lines(d), what="the parameter reached the script")
    seen = len(log_lines(browser))
    until(browser, lambda d: len(log_lines(d)) > seen + 5, what="lines keep coming while the page is open")
    green = browser.find_element(By.CSS_SELECTOR, "#log .line span.fg2")
    assert green.text == "green words" and green.value_of_css_property("color") == "rgba(35, 209, 139, 1)"
    red = browser.find_element(By.CSS_SELECTOR, "#log .line span.fg1.bold")
    assert red.text == "bold red" and red.value_of_css_property("font-weight") == "700"
    assert browser.find_element(By.ID, "L1").find_element(By.CSS_SELECTOR, "a.n").get_attribute("href").endswith("#L1")
    assert browser.title.startswith("▶")
    browser.find_element(By.XPATH, "//button[text()='Cancel']").click()
    until(browser, lambda d: "cancelled" in d.find_element(By.CSS_SELECTOR, "#summary .pill").text,
          what="the page shows the cancel")  # fmt: skip
    assert wait_for_job(api, job_id)["state"] == "cancelled"
    until(browser, lambda d: d.title.startswith("⊘"), what="the tab's title says so")
    until(browser, lambda d: d.find_element(By.ID, "log").get_attribute("data-ended") == "1")


def test_a_million_line_log_opens_on_its_last_line(server, api, browser):
    scenario(api, "seq 1 1000000\n")
    job = wait_for_job(api, api.patch("/repos/demo/build.sh").json()["id"], timeout=180)
    assert job["state"] == "success"
    started = time.monotonic()
    browser.get(f"{server.url}/ui/jobs/{job['id']}")
    until(browser, lambda d: d.find_elements(By.ID, "L1000000"), what="the last line is shown")
    opened = time.monotonic() - started
    assert opened < 5, f"the last line took {opened:.1f} s"  # bench/web.py measures it; this is a guard
    shown = log_lines(browser)
    assert shown[-1] == "1000000" and len(shown) == 5000, "only the tail is loaded"
    earlier = browser.find_element(By.ID, "log-earlier")
    assert earlier.is_displayed() and "995000 not shown" in earlier.text
    earlier.click()
    until(browser, lambda d: d.find_elements(By.ID, "L990001"), what="earlier lines are loaded on request")
    search = browser.find_element(By.ID, "log-search")
    search.send_keys("999999\n")
    until(browser, lambda d: "hit" in d.find_element(By.ID, "L999999").get_attribute("class"))


def test_sign_in_where_tokens_are_required(start_server, db, browser):
    server = start_server(PIETER_API_HOST="0.0.0.0")
    secret = add_token(db)
    browser.get(server.url + "/ui/")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Sign in" and "<h1>Overview" not in browser.page_source
    browser.find_element(By.ID, "token").send_keys("pieter_not-a-token\n")
    until(browser, lambda d: "not valid" in d.page_source, what="a wrong token is refused, saying so")
    assert browser.find_element(By.ID, "connection").text == "", "no event stream before signing in"
    browser.find_element(By.ID, "token").send_keys(secret + "\n")
    until(browser, lambda d: d.find_element(By.TAG_NAME, "h1").text == "Overview", what="signed in")
    assert browser.execute_script("return document.cookie") == "", "the session cookie is HttpOnly"
    with server.client() as api:  # the event stream works with the session: a new job shows without a reload
        api.headers["Authorization"] = f"Bearer {secret}"
        scenario(api)
        job_id = api.patch("/repos/demo/build.sh").json()["id"]
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f"a[href='/ui/jobs/{job_id}']"), what="live update")
    browser.find_element(By.XPATH, "//button[text()='Sign out']").click()
    until(browser, lambda d: d.find_element(By.TAG_NAME, "h1").text == "Sign in")
    browser.get(server.url + "/ui/")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Sign in"


def test_the_page_says_when_it_lost_the_server(server, browser):
    browser.get(server.url + "/ui/")
    banner = browser.find_element(By.ID, "connection")
    server.stop()
    until(browser, lambda d: "Lost the server" in banner.text, what="the banner")
    server.start()
    until(browser, lambda d: banner.text == "", timeout=20, what="reconnected by itself")


def test_pages_work_with_the_keyboard(server, api, browser):
    scenario(api)
    browser.get(server.url + "/ui/repos/demo/build.sh")
    active = lambda d: d.switch_to.active_element  # noqa: E731
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("\t")
    assert active(browser).text == "Skip to content"
    try:
        browser.find_element(By.ID, "params").send_keys("\t\t\n")  # params → commit → Run, pressed with Enter
    except WebDriverException as e:
        pytest.fail(f"cannot reach the Run button with Tab: {e}")
    until(browser, lambda d: "/ui/jobs/" in d.current_url, what="Run pressed with the keyboard")
