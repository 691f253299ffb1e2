"""The live view in a real headless Chromium (Debian's), against a real `sat-audio run`.

The page is opened through a tiny reverse proxy that serves it under an ingress-style prefix, as
Home Assistant's Supervisor does (/api/hassio_ingress/<token>/ to the add-on's port, streaming
what has no Content-Length), and the view answers only the proxy's address, as the add-on's
answers only the Supervisor's. The checkpoint always says "Bark" (its other labels follow the
audio); a volume gate and five rules on Bark with different settings put each rule state on
screen. With SAT_AUDIO_SCREENSHOTS=1 the screenshots go to docs/images/ (the docs show them).
"""

import http.client
import os
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml
from playwright.sync_api import Page, expect, sync_playwright

from sat_audio.labels import find
from tests.broker import Broker, Subscriber
from tests.checkpoints import fire_label, random_model, save_upstream, upstream_name
from tests.test_listener import BASE, Run, file_source, make_wav, mqtt_section, write_config
from tests.waiting import PATIENCE_S, wait_until

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
PREFIX = "/api/hassio_ingress/3f1c9a0d7e5b4a61/"
PROXY_ADDRESS = "127.0.0.2"
"""The proxy connects from here; the view answers no other address (the add-on: 172.30.32.2)."""
IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
RULES = {
    "dog": {"labels": ["Bark"], "on_threshold": 0.5, "off_threshold": 0.3, "hold_s": 0},
    "slow": {
        "labels": ["Bark"],
        "on_threshold": 0.5,
        "off_threshold": 0.3,
        "hold_s": 0,
        "min_duration_s": 3,
    },
    "never": {
        "labels": ["Bark"],
        "on_threshold": 0.9999,  # the head says Bark at sigmoid(8) = 0.99966
        "off_threshold": 0.5,
        "min_level_dbfs": -120,
    },
    "cool": {
        "labels": ["Bark"],
        "on_threshold": 0.5,
        "off_threshold": 0.3,
        "hold_s": 0,
        "cooldown_s": 120,
    },
    "hold": {"labels": ["Bark"], "on_threshold": 0.5, "off_threshold": 0.3, "hold_s": 120},
    "loud": {"kind": "loud", "on_dbfs": -30, "off_dbfs": -40, "hold_s": 0},
    "off": {"labels": ["Bark"], "on_threshold": 0.5, "off_threshold": 0.3, "enabled": False},
}


RECORD_STATES = """() => {
  window.shownStates = {};
  const record = () => {
    for (const node of document.querySelectorAll(".event")) {
      const key = node.dataset.event;
      (window.shownStates[key] ??= new Set()).add(node.querySelector(".state").textContent);
    }
  };
  new MutationObserver(record).observe(document.getElementById("sources"),
    { subtree: true, childList: true, characterData: true });
  record();
}"""
"""Keeps every rule state the page shows: some last one chunk, between two looks from here."""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bark always on top; every other label a random function of the audio."""
    model = random_model("SAT_T_2s", seed=3)
    head = model.outputlayer[1]
    others = head.weight.detach().clone()
    fire_label(model, find("Bark").index)
    with torch.no_grad():
        head.weight.copy_(0.05 * others / others.std())
        head.weight[find("Bark").index] = 0
        head.bias.fill_(-2.0)
        head.bias[find("Bark").index] = 8.0
    folder = tmp_path_factory.mktemp("web")
    return save_upstream(model, folder / upstream_name("SAT_T_2s"))


class Ingress:
    """/api/hassio_ingress/<token>/PATH to the view's /PATH, from PROXY_ADDRESS; a POST with the
    browser's headers (its Origin is the proxy's, its Host the view's: Sec-Fetch-Site decides)."""

    def __init__(self, port: int) -> None:
        upstream = port

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.forward("GET")

            def do_POST(self) -> None:
                self.forward("POST")

            def forward(self, method: str) -> None:
                if not self.path.startswith(PREFIX):
                    self.send_error(404)
                    return
                conn = http.client.HTTPConnection(
                    "127.0.0.1", upstream, timeout=PATIENCE_S, source_address=(PROXY_ADDRESS, 0)
                )
                path = "/" + self.path[len(PREFIX) :]
                if method == "GET":
                    conn.request("GET", path)
                else:
                    body = self.rfile.read(int(self.headers["Content-Length"]))
                    keep = ("content-type", "origin", "sec-fetch-site")
                    headers = {k: v for k, v in self.headers.items() if k.lower() in keep}
                    conn.request(method, path, body, headers)
                resp = conn.getresponse()
                self.send_response(resp.status)
                for name, value in resp.getheaders():
                    if name.lower() not in ("connection", "transfer-encoding"):
                        self.send_header(name, value)
                self.end_headers()
                try:
                    if resp.getheader("Content-Length") is not None:
                        self.wfile.write(resp.read())
                    else:  # streamed as it comes (the Supervisor does the same)
                        while data := resp.read1(65536):
                            self.wfile.write(data)
                            self.wfile.flush()
                except OSError:
                    pass  # the browser went
                finally:
                    conn.close()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{PREFIX}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def running(tmp_path: Path, broker: Broker, checkpoint: Path) -> Iterator[tuple[Run, Ingress]]:
    wav = make_wav(tmp_path / "live.wav", "XXXXX_____")
    config = write_config(
        tmp_path,
        checkpoint,
        [file_source(wav, realtime=True, loop=True)],
        mqtt_section(broker),
        web={"enabled": True, "port": 0, "history_minutes": 2, "allow": [PROXY_ADDRESS]},
    )
    data = yaml.safe_load(config.read_text())
    data["detection"]["events"] = RULES
    config.write_text(yaml.safe_dump(data))
    run = Run(tmp_path, config)
    try:
        run.wait_stderr("live view on http://")
        port = int(re.search(r"live view on http://[\d.]+:(\d+)/", run.stderr())[1])
        ingress = Ingress(port)
        yield run, ingress
        ingress.stop()
    finally:
        run.stop()


def seen(read: Callable[[], str], want: int | set[str | re.Pattern[str]]) -> set[str]:
    """The distinct texts read() gives until there are `want` of them, or one matching each of
    `want`."""
    values: set[str] = set()

    def done() -> bool:
        values.add(read())
        if isinstance(want, int):
            return len(values) >= want
        return all(
            any(w.fullmatch(v) if isinstance(w, re.Pattern) else w == v for v in values)
            for w in want
        )

    wait_until(done, f"{want} among {values}", poll_s=0.2)
    return values


def test_live_view_through_ingress(running: tuple[Run, Ingress], broker: Broker) -> None:
    run, ingress = running
    port = int(re.search(r"live view on http://[\d.]+:(\d+)/", run.stderr())[1])
    with pytest.raises(urllib.error.HTTPError) as refused:  # not the proxy: refused
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=PATIENCE_S)
    assert refused.value.code == 403

    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(PATIENCE_S * 1000)
            page.on(
                "console",
                lambda m: errors.append(m.text) if m.type == "error" else None,
            )
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(ingress.url)
            expect(page.locator("#title")).to_have_text("End to end")
            expect(page.locator("#connection")).to_have_text("live")
            page.evaluate(RECORD_STATES)
            card = page.locator('.source[data-source="mic"]')
            level = card.locator(".level-text")
            # the silent seconds and the tone's (about -13 dBFS)
            levels = seen(level.inner_text, {"-120.0 dBFS", re.compile(r"-1\d\.\d dBFS")})
            assert len(levels) >= 2
            second = card.locator("ol.top li").nth(1)
            assert len(seen(second.inner_text, 2)) >= 2  # the scores follow the audio
            expect(card.locator("ol.top li").first.locator(".label")).to_have_text("Bark")

            expected = {
                "dog": [r"on", r"below the volume gate"],
                "slow": [r"above for 1 of 3 s", r"above for 2 of 3 s", r"on"],
                "never": [r"below on threshold"],
                "cool": [r"cooldown \d+(\.\d)? s left"],
                "hold": [r"on, holding \d+(\.\d)? of 120 s"],
                "loud": [r"on", r"below on threshold"],
                "off": [r"switched off"],
            }

            def missing() -> list[str]:
                shown = page.evaluate(
                    "() => Object.fromEntries(Object.entries(window.shownStates)"
                    ".map(([k, v]) => [k, [...v]]))"
                )
                return [
                    f"{key}: {pattern}"
                    for key, patterns in expected.items()
                    for pattern in patterns
                    if not any(re.fullmatch(pattern, s) for s in shown.get(key, []))
                ]

            wait_until(lambda: not missing(), "every rule state on the page")
            rows = page.locator('#episodes tbody tr[data-event="dog"]')
            expect(rows.first).to_be_visible()
            expect(rows.first.locator("td").nth(2)).to_have_text("Dog")
            expect(page.locator('#health tbody tr[data-source="mic"] td').nth(1)).to_have_text("ok")
            # the shading: an episode of dog is drawn under its chart's line
            assert page.evaluate(
                "() => state.episodes.some((e) => e.event === 'dog' && e.end_t !== null)"
            )
            shoot(page, "live-view.png")

            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_timeout(500)  # the charts follow the width
            assert page.evaluate("() => document.documentElement.scrollWidth <= innerWidth")
            box = card.locator(".event .chart canvas").first.bounding_box()
            assert box is not None and box["width"] <= 390
            shoot(page, "live-view-phone.png")

            page.set_viewport_size({"width": 1280, "height": 1000})
            page.fill("#per-day", "24")
            page.click("#calibrate-form button")
            expect(page.locator("#calibrate-yaml")).to_contain_text("dog:")
            expect(page.locator("#calibrate-table")).to_contain_text("h of audio")

            # teach a sound from the last seconds the listener heard, through the ingress
            page.fill("#teach-name", "Ding")
            page.fill("#teach-seconds", "10")
            page.click("#teach-form button")
            result = page.locator("#teach-result")
            expect(result).to_contain_text("taught custom:ding")
            expect(result).to_contain_text("custom:ding in its labels after the listener restarts")

            sub = Subscriber(broker, (f"{BASE}/listening",)).start()
            try:
                sub.client.publish(f"{BASE}/listening/set", "OFF", qos=1)
                for key in RULES:
                    expect(card.locator(f'.event[data-event="{key}"] .state')).to_have_text(
                        "paused"
                    )
            finally:
                sub.stop()
        finally:
            browser.close()
    assert errors == []


def shoot(page: Page, name: str) -> None:
    """Into docs/images/ when asked (SAT_AUDIO_SCREENSHOTS=1), else a throwaway render."""
    if os.environ.get("SAT_AUDIO_SCREENSHOTS") == "1":
        page.screenshot(path=str(IMAGES / name), full_page=False)
    else:
        assert page.screenshot(full_page=False)
