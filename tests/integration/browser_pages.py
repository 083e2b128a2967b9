"""Drive headless Chromium (Debian's chromium + chromium-driver, through Debian's selenium) over
the dashboard's pages and print what a user sees, as JSON.  Run by tests/integration/test_web.py
inside the lab's host namespace, where the dashboard listens on loopback:

    python browser_pages.py BASE_URL PASSWORD PROFILE_DIR SHOT_DIR FOLLOW_NAME WHY_ADDRESS

After the query-log page has loaded it asks the lab's resolver for FOLLOW_NAME (dig) and waits for
that row to appear without a reload.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage", "--window-size=1400,1000", "--lang=en-GB"]
PAGES = ["overview", "log", "hosts", "refused", "why", "learn"]
#: Pixels of the plot's canvas drawn in the "queries" colour (#0969da, anti-aliasing allowed).
PLOT_PIXELS = """
const c = document.querySelector('#plot .uplot canvas');
if (!c) return -1;
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let n = 0;
for (let i = 0; i < d.length; i += 4)
  if (d[i + 3] > 0 && d[i + 2] > 150 && d[i] < 80 && d[i + 1] > 70 && d[i + 1] < 150) n++;
return n;
"""


def rows(driver, table_id: str) -> list[list[str]]:
    return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in driver.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")]


def main(base: str, password: str, profile: str, shots: str, follow: str, why: str,
         refused: str = "") -> dict:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    out: dict = {"console": []}
    # A loaded CI machine: the first plot once took over 15 s.  An element read while its page is
    # replaced (the login's refusal is a new page) goes stale: the wait tries again.
    wait = WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,))
    try:
        driver.get(base + "/log")                       # not logged in: the login page
        out["redirected_to_login"] = driver.current_url.startswith(base + "/login")
        driver.find_element(By.ID, "password").send_keys("wrong")
        driver.find_element(By.CSS_SELECTOR, "button").click()
        # the refusal is a new page: wait for its message rather than read the old one's
        out["wrong_password_error"] = wait.until(
            lambda d: next((e.text for e in d.find_elements(By.CLASS_NAME, "error") if e.text), None))
        driver.find_element(By.ID, "password").send_keys(password)
        driver.find_element(By.CSS_SELECTOR, "button").click()
        # the login answers with a redirect: wait for the new page, not the one clicked on
        wait.until(lambda d: "/login" not in d.current_url)
        out["after_login"] = driver.current_url.removeprefix(base)
        for page in PAGES:
            path = {"overview": "/", "why": "/why?address=" + why}.get(page, "/" + page)
            driver.get(base + path)
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "main table, #error"))
            if page == "overview":
                wait.until(lambda d: d.execute_script(PLOT_PIXELS) > 0)
                out["plot_pixels"] = driver.execute_script(PLOT_PIXELS)
                out["plot_legend"] = [e.text for e in driver.find_elements(
                    By.CSS_SELECTOR, "#plot .u-legend .u-label")]
                out["totals"] = driver.find_element(By.ID, "totals").text.split("\n")
                for t in ("top-allowed", "top-blocked", "top-clients"):
                    out[t] = rows(driver, t)
            elif page == "log":
                out["log"] = rows(driver, "log")
                subprocess.run(["dig", "@127.0.0.1", "+short", follow], capture_output=True,
                               timeout=10)
                try:
                    wait.until(lambda d: any(r and r[1] == follow for r in rows(d, "log")))
                    out["followed"] = [r for r in rows(driver, "log") if r[1] == follow]
                except TimeoutException:
                    out["followed"] = []
                out["follow_status"] = driver.find_element(By.ID, "follow").text
            elif page == "why":
                out["why_state"] = driver.find_element(By.ID, "why-state").text
                out["why-grants"] = rows(driver, "why-grants")
            elif page == "learn":
                out["learn-allow"] = rows(driver, "learn-allow")
                out["learn-bare"] = rows(driver, "learn-bare")
                out["learn_toml"] = driver.find_element(By.ID, "learn-toml").text
            else:
                table = {"hosts": "granted"}.get(page, page)
                out[table] = rows(driver, table)
            errors = driver.find_elements(By.ID, "error")
            out.setdefault("errors", []).extend(e.text for e in errors)
            time.sleep(0.3)
            driver.save_screenshot(f"{shots}/{page}.png")
        if refused:                                     # the story of a refused address
            driver.get(base + "/why?address=" + refused)
            wait.until(lambda d: d.find_elements(By.ID, "why-refused"))
            out["why_refused_state"] = driver.find_element(By.ID, "why-state").text
            out["why-refused"] = rows(driver, "why-refused")
        out["console"] = [e["message"] for e in driver.get_log("browser")
                          if e.get("level") == "SEVERE"]
    finally:
        driver.quit()
    return out


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:8])))
