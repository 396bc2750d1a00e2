"""The status and device pages in a real browser: headless Chromium
driven by Selenium (Debian: chromium, chromium-driver, python3-selenium;
scripts/install-deps.sh installs them).  A test producer registers a
device; the status page must list it and its rate must move; the device
page's plot must change as frames arrive.  Each test saves a screenshot
under build/."""
import math
import os
import shutil
import struct
import threading
import time
import unittest

import ferryweb

try:
    import selenium  # noqa: F401
except ImportError:
    # python3-selenium is Debian's: reachable from another Python 3 too.
    import sys
    sys.path.append("/usr/lib/python3/dist-packages")
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:          # pragma: no cover
    webdriver = None

SHOTS = os.path.join(ferryweb.ROOT, os.environ.get("FERRY_BUILD", "build"))
KEYS = ["jawOpen", "mouthSmile_L", "mouthSmile_R", "eyeBlink_L", "eyeBlink_R",
        "browInnerUp", "cheekPuff", "tongueOut"] + [f"shape{i}" for i in range(44)]


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Producer(threading.Thread):
    """A TCP producer sending 52 blendshape-like values at 60 Hz."""

    def __init__(self, f, uuid):
        super().__init__(daemon=True)
        self.p = f.producer("plain", uuid, KEYS)
        self.stop = threading.Event()
        self.sent = 0

    def run(self):
        t = 0.0
        while not self.stop.is_set():
            vals = [0.5 + 0.5 * math.sin(t * (1 + k / 7) + k) for k in range(len(KEYS))]
            try:
                self.p.send(vals)
            except Exception:
                return
            self.sent += 1
            t += 1 / 60
            time.sleep(1 / 60)

    def finish(self):
        self.stop.set()
        self.join(5)
        self.p.close()


@unittest.skipIf(webdriver is None or chromium() is None or not shutil.which("chromedriver"),
                 "needs chromium, chromium-driver and python3-selenium")
class Browser(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.f = ferryweb.Ferry()
        opts = Options()
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu",
                  "--disable-dev-shm-usage", "--window-size=1280,900"):
            opts.add_argument(a)
        opts.binary_location = chromium()
        try:
            cls.driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")),
                                          options=opts)
        except Exception:
            cls.f.stop()
            raise
        cls.driver.set_page_load_timeout(30)

    @classmethod
    def tearDownClass(cls):
        cls.driver.quit()
        cls.f.stop()

    def shot(self, name):
        os.makedirs(SHOTS, exist_ok=True)
        self.driver.save_screenshot(os.path.join(SHOTS, name))

    def wait(self, cond, timeout=20):
        return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(cond)

    def test_status_page_lists_a_device_and_its_rate_moves(self):
        prod = Producer(self.f, "phone-status")
        prod.start()
        try:
            d = self.driver
            d.get(self.f.admin_url("/"))
            self.wait(lambda d: d.find_elements(
                By.CSS_SELECTOR, 'tr[data-uuid="phone-status"]'))

            # Read in one go: the page rebuilds its rows every second.
            def cells(d):
                return d.execute_script(
                    "return Array.from(document.querySelectorAll("
                    "'tr[data-uuid=\"phone-status\"] td')).map(t => t.textContent)")

            def rate(d):
                c = cells(d)
                return float(c[4]) if len(c) > 4 and c[4] else 0.0

            def frames(d):
                c = cells(d)
                return int(c[5]) if len(c) > 5 and c[5] else 0
            self.wait(lambda d: len(cells(d)) > 5)
            self.assertEqual(cells(d)[0], "phone-status")
            self.assertEqual(cells(d)[3], "52")      # keys
            self.wait(lambda d: rate(d) > 0)
            first = frames(d)
            self.wait(lambda d: frames(d) > first)      # it updates itself
            listeners = d.find_element(By.ID, "listeners").text
            self.assertIn("plain", listeners)
            self.assertIn("tls", listeners)
            self.shot("status-page.png")
        finally:
            prod.finish()

    def test_device_page_plots_frames_as_they_arrive(self):
        prod = Producer(self.f, "phone-plot")
        prod.start()
        try:
            d = self.driver
            d.get(self.f.admin_url("/devices/phone-plot"))
            self.wait(lambda d: d.execute_script("return window.ferryFrames") > 10)
            canvas = "return document.querySelector('#plot canvas').toDataURL()"
            self.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#plot canvas"))
            img1 = d.execute_script(canvas)
            n1 = d.execute_script("return window.ferryFrames")
            self.wait(lambda d: d.execute_script("return window.ferryFrames") > n1 + 30)
            self.wait(lambda d: d.execute_script(canvas) != img1)
            # 52 keys to choose from, the first 8 shown; the latest frame's table.
            boxes = d.find_elements(By.CSS_SELECTOR, "#keys input[type=checkbox]")
            self.assertEqual(len(boxes), 52)
            self.assertEqual(sum(1 for b in boxes if b.is_selected()), 8)
            self.assertNotEqual(d.find_element(By.ID, "val0").text, "")
            self.assertIn("frames/s", d.find_element(By.ID, "info").text)
            # The page's consumer counts as a WebSocket consumer.
            self.assertEqual(self.f.device("phone-plot")["consumers_websocket"], 1)
            self.shot("device-page.png")
        finally:
            prod.finish()


if __name__ == "__main__":
    unittest.main()
