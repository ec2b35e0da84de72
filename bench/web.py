"""7. The pages at scale: the server's time to answer the overview and a job page with 100k finished jobs in Redis
(written as bench/history.py writes them), beside the bare GET server in the same rounds; and, in headless
chromium, the time from opening the job page of a 1,000,000-line log to its last line on screen, beside the raw
log's fetch (`GET /jobs/{id}/log`, all of it) in the same run. The note gives the job page's weight: every byte
it loads (HTML, CSS, both scripts, the log's tail), uncompressed.
"""

import asyncio
import time

import httpx
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from bench.common import Context, Figure, ms, wait_until
from bench.history import SCENARIOS, SCRIPT, add_jobs, timed
from pieter.web.pages import TAIL_LINES

JOBS = 100_000
LINES = 1_000_000


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(argument)  # type: ignore[no-untyped-call]  # (Debian 4.8: not annotated)
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


def run(ctx: Context) -> list[Figure]:
    rounds = ctx.n(50, 10)
    jobs = ctx.n(JOBS, 10_000)
    figures = []
    with ctx.servers("web", PIETER_KEEP_JOBS="1000000", PIETER_LOG_MAX_BYTES="100000000") as (db, pieter, bare):
        api, base = httpx.Client(base_url=pieter.url, timeout=60), httpx.Client(base_url=bare.url)
        api.put("/repos/hist", json={"source": ""})
        for scenario in SCENARIOS:
            api.put(f"/repos/hist/{scenario}", content=SCRIPT)
        db.set("bench:hist", api.get("/repos/hist").text)
        asyncio.run(add_jobs(pieter.env["PIETER_REDIS_URL"], jobs))
        wait_until(lambda: api.get("/").json()["counts"]["jobs"] == jobs, 10, "the jobs")
        times: dict[str, list[float]] = {"overview": [], "job": [], "bare": []}
        for _ in range(rounds):
            times["bare"].append(timed(base, "/repos/hist"))
            times["overview"].append(timed(api, "/ui/"))
            times["job"].append(timed(api, f"/ui/jobs/{jobs // 2}"))
        for name, path in (("overview", "GET /ui/"), ("job", "GET /ui/jobs/{id}")):
            figures.append(Figure("7 web", f"{path} at {jobs // 1000}k jobs", "ms", ms(times[name]), "bare GET",
                                  ms(times["bare"]), "< 50 ms p50", sorted(times[name])[rounds // 2] < 0.05))  # fmt: skip

        api.put("/repos/hist/big.sh", content=f"seq 1 {LINES}\n".encode())
        big = api.patch("/repos/hist/big.sh").json()["id"]
        wait_until(lambda: api.get(f"/jobs/{big}").json()["state"] == "success", 300, "the 1M-line job", poll=0.5)
        raw, shown = [], []
        driver = browser()
        try:
            for _ in range(ctx.n(5, 2)):
                raw.append(timed(api, f"/jobs/{big}/log"))
                driver.get("about:blank")
                began = time.perf_counter()
                driver.get(f"{pieter.url}/ui/jobs/{big}")
                WebDriverWait(driver, 30, poll_frequency=0.01).until(lambda d: d.find_elements(By.ID, f"L{LINES}"))
                shown.append(time.perf_counter() - began)
        finally:
            driver.quit()
        page = api.get(f"/ui/jobs/{big}").content
        assets = [api.get(f"/ui/static/{name}").content for name in ("app.css", "app.js", "log.js")]
        tail = api.get(f"/jobs/{big}/log", params={"offset": LINES - TAIL_LINES}).content
        weight = len(page) + sum(map(len, assets)) + len(tail)
        figures.append(Figure("7 web", "1M-line log: last line on screen", "ms", ms(shown), "raw log fetch", ms(raw),
                              "< 1000 ms", sorted(shown)[len(shown) // 2] < 1.0,
                              f"job page weight {weight / 1024:.0f} KiB: HTML {len(page)} B, CSS+JS "
                              f"{sum(map(len, assets))} B, log tail {len(tail)} B ({TAIL_LINES} lines)"))  # fmt: skip
    return figures
