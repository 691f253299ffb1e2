"""Screenshots of SAT Audio in a real Home Assistant, taken by headless Chromium.

A real Home Assistant server runs this integration against a local mosquitto, where a simulated
listener publishes the protocol's messages (docs/protocol.md) for a kitchen listener; a user is
onboarded through Home Assistant's API, and the browser opens the device page, the automation
editor on a device trigger, and a dashboard made of docs/dashboard.yaml. Each page's text,
shadow roots included, is checked for raw event keys before its screenshot is kept.

Run by scripts/screenshots (which installs what this needs): `python scripts/screenshots.py
--hass CMD --work DIR`, CMD being how to start Home Assistant (`-c CONFIG` is appended).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from playwright.async_api import Page, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeout

ROOT = Path(__file__).resolve().parents[1]
BASE = "sat_audio/kitchen"
EVENTS = [
    ("glass_breaking", "Glass breaking", ["Glass", "Shatter"]),
    ("smoke_alarm", "Smoke alarm", ["Smoke detector, smoke alarm"]),
    ("dog_bark", "Dog barking", ["Dog", "Bark"]),
]
# What no page may show: the event keys, alone or in the old "<key>_started" event types.
RAW_KEYS = re.compile(r"\b(?:" + "|".join(key for key, _, _ in EVENTS) + r")(?:_\w+)?\b")
CLIENT_ID = "http://127.0.0.1/"
USER, PASSWORD = "demo", "screenshots-only"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Collects the text a user can see, through every open shadow root (Home Assistant's frontend
# is web components all the way down; document.body.innerText sees none of it).
DEEP_TEXT = """() => {
  const parts = [];
  const walk = (node) => {
    if (node.nodeType === Node.TEXT_NODE) { parts.push(node.textContent); return; }
    if (node.nodeType !== Node.ELEMENT_NODE && node.nodeType !== Node.DOCUMENT_FRAGMENT_NODE
        && node.nodeType !== Node.DOCUMENT_NODE) return;
    if (node.localName === "style" || node.localName === "script") return;
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const child of node.childNodes) walk(child);
  };
  walk(document);
  return parts.join(" ");
}"""


def free_port() -> int:
    """Return a TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(folder: Path, port: int) -> None:
    """A minimal Home Assistant: the frontend, automations, history, logbook, this integration."""
    (folder / "custom_components").mkdir(parents=True)
    (folder / "custom_components" / "sat_audio").symlink_to(
        ROOT / "custom_components" / "sat_audio"
    )
    (folder / "automations.yaml").write_text("[]\n")
    (folder / "configuration.yaml").write_text(
        f"""homeassistant:
  name: Home
  unit_system: metric
  time_zone: UTC
  latitude: 52.52
  longitude: 13.40
  elevation: 34
  country: DE
  language: en
  currency: EUR
http:
  server_host: 127.0.0.1
  server_port: {port}
frontend:
config:
automation: !include automations.yaml
history:
logbook:
recorder:
  commit_interval: 1
"""
    )


class Listener:
    """A simulated SAT Audio listener: the retained topics, episodes and scores it publishes."""

    def __init__(self, port: int) -> None:
        """Connect to the broker."""
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sat-audio-kitchen")
        self.client.will_set(f"{BASE}/status", "offline", qos=1, retain=True)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.episode = 0

    def publish(self, suffix: str, payload: str | dict[str, Any], retain: bool = False) -> None:
        """Publish one message and wait for the broker to take it."""
        text = payload if isinstance(payload, str) else json.dumps(payload)
        self.client.publish(f"{BASE}/{suffix}", text, qos=1, retain=retain).wait_for_publish(10)

    def start(self) -> None:
        """Say online, announce the events, and that nothing is heard yet."""
        self.publish("status", "online", retain=True)
        self.publish(
            "info",
            {
                "v": 1,
                "id": "kitchen",
                "name": "Kitchen",
                "version": "0.1.0",
                "model": "SAT_T_2s",
                "chunk_s": 2.0,
                "listening": True,
                "sources": [{"name": "mic", "kind": "mic", "state": "ok"}],
                "events": [
                    {
                        "key": key,
                        "name": name,
                        "labels": labels,
                        "on_threshold": 0.45,
                        "off_threshold": 0.3,
                    }
                    for key, name, labels in EVENTS
                ],
                "counters": {"chunks": 0},
            },
            retain=True,
        )
        self.publish("listening", "ON", retain=True)
        for key, _, _ in EVENTS:
            self.publish(f"event/{key}/state", "OFF", retain=True)

    def scores(self, label: str, score: float, level: float) -> None:
        """Publish one chunk's top label and level."""
        self.publish(
            "scores",
            {
                "v": 1,
                "source": "mic",
                "time": _now(),
                "level_dbfs": level,
                "top": [{"label": label, "score": score}],
            },
        )

    def episode_of(self, key: str, label: str, score: float, seconds: float) -> None:
        """Hear one episode: its start, scores while it lasts, its end."""
        self.episode += 1
        started, start = time.time(), _now()
        base = {"v": 1, "id": f"demo{self.episode:04d}", "event": key, "source": "mic"}
        base |= {"label": label, "start": start}
        self.publish(
            f"event/{key}",
            base | {"type": "start", "score": score, "peak": score, "end": None, "duration_s": 0},
        )
        self.publish(f"event/{key}/state", "ON", retain=True)
        while time.time() - started < seconds:
            self.scores(label, score, -18.0 - 4 * (time.time() - started))
            time.sleep(0.5)
        duration = round(time.time() - started, 3)
        end = base | {"type": "end", "score": 0.2, "peak": score, "end": _now()}
        self.publish(f"event/{key}", end | {"duration_s": duration})
        self.publish(f"event/{key}/state", "OFF", retain=True)

    def stop(self) -> None:
        """Disconnect; the will says offline, which nobody watches any more."""
        self.client.loop_stop()
        self.client.disconnect()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000+00:00", time.gmtime())


class HomeAssistantApi:
    """The REST and websocket calls the frontend would make, with the onboarded user's token."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        """Talk to the server at `url`."""
        self.session, self.url = session, url
        self.tokens: dict[str, Any] = {}
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._id = 0

    async def wait_until_up(self, hass: subprocess.Popen[bytes], log: Path) -> None:
        """Wait for the HTTP server (the first start installs nothing: --skip-pip)."""
        for _ in range(600):
            if hass.poll() is not None:
                sys.exit(f"Home Assistant exited:\n{log.read_text()[-3000:]}")
            try:
                async with self.session.get(f"{self.url}/api/onboarding") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
        sys.exit(f"Home Assistant did not answer:\n{log.read_text()[-3000:]}")

    async def onboard(self) -> None:
        """Create the owner and finish onboarding, as the first visit's wizard does."""
        user = await self.post(
            "/api/onboarding/users",
            {
                "client_id": CLIENT_ID,
                "name": "Demo",
                "username": USER,
                "password": PASSWORD,
                "language": "en",
            },
            auth=False,
        )
        async with self.session.post(
            f"{self.url}/auth/token",
            data={
                "grant_type": "authorization_code",
                "code": user["auth_code"],
                "client_id": CLIENT_ID,
            },
        ) as response:
            self.tokens = await response.json()
        await self.post("/api/onboarding/core_config", {})
        await self.post("/api/onboarding/analytics", {})
        await self.post(
            "/api/onboarding/integration", {"client_id": CLIENT_ID, "redirect_uri": CLIENT_ID}
        )

    async def post(self, path: str, data: dict[str, Any], auth: bool = True) -> Any:
        """POST JSON, fail on an error status, return the JSON answer."""
        headers = {"Authorization": f"Bearer {self.tokens['access_token']}"} if auth else {}
        async with self.session.post(f"{self.url}{path}", json=data, headers=headers) as response:
            body = await response.text()
            if response.status >= 400:
                sys.exit(f"POST {path}: {response.status} {body}")
            return json.loads(body) if body else None

    async def get(self, path: str) -> Any:
        """GET JSON; None for 404."""
        headers = {"Authorization": f"Bearer {self.tokens['access_token']}"}
        async with self.session.get(f"{self.url}{path}", headers=headers) as response:
            if response.status == 404:
                return None
            if response.status >= 400:
                sys.exit(f"GET {path}: {response.status} {await response.text()}")
            return await response.json()

    async def ws(self, message: dict[str, Any], *, optional: bool = False) -> Any:
        """Send one websocket command and return its result (None if optional and it failed)."""
        if self._ws is None:
            self._ws = await self.session.ws_connect(f"{self.url}/api/websocket")
            await self._ws.receive_json()
            await self._ws.send_json({"type": "auth", "access_token": self.tokens["access_token"]})
            assert (await self._ws.receive_json())["type"] == "auth_ok"
        self._id += 1
        await self._ws.send_json({"id": self._id, **message})
        while True:
            answer = await self._ws.receive_json()
            if answer.get("id") == self._id and answer["type"] == "result":
                if not answer["success"]:
                    if optional:
                        return None
                    sys.exit(f"{message['type']}: {answer['error']}")
                return answer["result"]

    async def flow(self, handler: str, *steps: dict[str, Any]) -> dict[str, Any]:
        """Run a config flow through its forms; return its last answer."""
        result = await self.post("/api/config/config_entries/flow", {"handler": handler})
        for step in steps:
            result = await self.post(f"/api/config/config_entries/flow/{result['flow_id']}", step)
        if result["type"] != "create_entry":
            sys.exit(f"{handler} flow ended with {result}")
        return dict(result)

    async def close(self) -> None:
        """Close the websocket."""
        if self._ws is not None:
            await self._ws.close()


async def set_up(api: HomeAssistantApi, listener: Listener, broker_port: int) -> dict[str, str]:
    """MQTT, the listener's entry, an automation and the dashboard; return ids."""
    # Newer releases take the YAML's HTTP settings on trial and ask the user to keep them.
    await api.ws({"type": "http/config/promote"}, optional=True)
    mqtt_form = await api.post("/api/config/config_entries/flow", {"handler": "mqtt"})
    if mqtt_form.get("step_id") == "user":  # the menu of newer releases: set up by hand
        mqtt_form = await api.post(
            f"/api/config/config_entries/flow/{mqtt_form['flow_id']}", {"next_step_id": "broker"}
        )
    broker = {"broker": "127.0.0.1", "port": broker_port}
    if any(field["name"] == "other_settings" for field in mqtt_form["data_schema"]):
        # Newer releases fold the rest into a section, whose choices must all be given.
        broker["other_settings"] = {"set_client_cert": False, "set_ca_cert": "off"}
    created = await api.post(f"/api/config/config_entries/flow/{mqtt_form['flow_id']}", broker)
    assert created["type"] == "create_entry", created
    listener.start()
    await api.flow("sat_audio", {"topic_prefix": "sat_audio", "listener_id": "kitchen"})
    devices = await api.ws({"type": "config/device_registry/list"})
    device = next(d for d in devices if ["sat_audio", "kitchen"] in d["identifiers"])
    # The per-chunk sensors are off by default; the dashboard shows them.
    for sensor_id in ("sound_level", "top_sound", "top_sound_score"):
        await api.ws(
            {
                "type": "config/entity_registry/update",
                "entity_id": f"sensor.kitchen_{sensor_id}",
                "disabled_by": None,
            }
        )
    # Home Assistant reloads the entry by itself 30 s after an entity is enabled.
    while await api.get("/api/states/sensor.kitchen_sound_level") is None:
        await asyncio.sleep(1)
    entities = await api.ws({"type": "config/entity_registry/list"})
    ours = {e["unique_id"]: e for e in entities if e["platform"] == "sat_audio"}
    if "kitchen-event-glass_breaking" not in ours:
        sys.exit(f"no glass breaking sensor among {sorted(ours)}")
    sensor = ours["kitchen-event-glass_breaking"]
    await api.post(
        "/api/config/automation/config/glass_at_night",
        {
            "alias": "Glass breaking at night",
            "description": "",
            "triggers": [
                {
                    "trigger": "device",
                    "domain": "sat_audio",
                    "device_id": device["id"],
                    "entity_id": sensor["id"],
                    "type": "started",
                    "subtype": "glass_breaking",
                }
            ],
            "conditions": [{"condition": "time", "after": "22:00:00", "before": "07:00:00"}],
            "actions": [
                {
                    "action": "persistent_notification.create",
                    "data": {"message": "{{ trigger.event.data.name }} in the kitchen"},
                }
            ],
            "mode": "single",
        },
    )
    view = yaml.safe_load((ROOT / "docs" / "dashboard.yaml").read_text())
    # The made-up episodes below last a minute: the history shows the last few minutes.
    for card in view["cards"]:
        if card["type"] == "history-graph":
            card["hours_to_show"] = 0.05
    # A dashboard of its own: newer releases show a generated overview by default.
    await api.ws(
        {
            "type": "lovelace/dashboards/create",
            "url_path": "sat-audio",
            "title": "Sounds",
            "icon": "mdi:ear-hearing",
            "mode": "storage",
            "show_in_sidebar": True,
            "require_admin": False,
        }
    )
    await api.ws(
        {"type": "lovelace/config/save", "url_path": "sat-audio", "config": {"views": [view]}}
    )
    return {"device": device["id"], "automation": "glass_at_night"}


def hear_a_minute(listener: Listener) -> None:
    """A minute of episodes, so that the history and logbook have something to show."""
    listener.episode_of("dog_bark", "Bark", 0.88, 6)
    listener.scores("Speech", 0.71, -34.0)
    time.sleep(3)
    listener.episode_of("glass_breaking", "Shatter", 0.62, 4)
    time.sleep(3)
    listener.episode_of("dog_bark", "Dog", 0.74, 3)
    for n in range(8):
        listener.scores("Speech", 0.6 + n / 40, -40.0 + n)
        time.sleep(0.5)


async def shoot(
    page: Page, url: str, wait_for: str, out: Path, work: Path, *, click: bool = False
) -> None:
    """Open a page, wait for a text on it (and click it), check it shows no raw key, save it.

    A page that never shows the text is saved as failed-<name> in the working folder.
    """
    await page.goto(url)
    try:
        await page.get_by_text(wait_for).first.wait_for(timeout=60_000)
    except PlaywrightTimeout:
        await page.screenshot(path=work / f"failed-{out.name}")
        raise
    await page.wait_for_load_state("networkidle")
    if click:
        await page.get_by_text(wait_for).first.click()
    await asyncio.sleep(2)  # charts and icons draw after the data arrives
    text = await page.evaluate(DEEP_TEXT)
    if found := sorted(set(RAW_KEYS.findall(text))):
        sys.exit(f"{url} shows raw event keys: {found}")
    await page.screenshot(path=out)
    print(f"wrote {out}")


async def run(hass_command: list[str], folder: Path, out: Path) -> None:
    """Start everything, take the screenshots, stop everything."""
    broker_port, port = free_port(), free_port()
    (folder / "mosquitto.conf").write_text(
        f"listener {broker_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
    )
    config = folder / "config"
    write_config(config, port)
    log = folder / "hass.log"
    broker = subprocess.Popen(
        ["mosquitto", "-c", str(folder / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with log.open("wb") as log_file:
        hass = subprocess.Popen(
            [*hass_command, "-c", str(config), "--skip-pip"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    listener: Listener | None = None
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}"
            api = HomeAssistantApi(session, url)
            await api.wait_until_up(hass, log)
            await api.onboard()
            listener = Listener(broker_port)
            ids = await set_up(api, listener, broker_port)
            await asyncio.to_thread(hear_a_minute, listener)
            await api.close()
            await browse(api, url, ids, out, folder)
    finally:
        if listener is not None:
            listener.stop()
        if hass.poll() is None:
            os.killpg(hass.pid, signal.SIGTERM)
            try:
                hass.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(hass.pid, signal.SIGKILL)
        broker.terminate()
        broker.wait()


async def browse(
    api: HomeAssistantApi, url: str, ids: dict[str, str], out: Path, work: Path
) -> None:
    """Log the browser in with the onboarded user's tokens and take each screenshot."""
    tokens = {
        "access_token": api.tokens["access_token"],
        "refresh_token": api.tokens["refresh_token"],
        "token_type": "Bearer",
        "expires_in": api.tokens["expires_in"],
        "expires": int(time.time() * 1000) + api.tokens["expires_in"] * 1000,
        "hassUrl": url,
        "clientId": CLIENT_ID,
    }
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True
        )
        context = await browser.new_context(
            viewport={"width": 1280, "height": 900}, device_scale_factor=1
        )
        await context.add_init_script(
            f"window.localStorage.setItem('hassTokens', {json.dumps(json.dumps(tokens))});"
        )
        page = await context.new_page()
        out.mkdir(parents=True, exist_ok=True)
        await shoot(
            page,
            f"{url}/config/devices/device/{ids['device']}",
            "Glass breaking",
            out / "device-page.png",
            work,
        )
        await shoot(
            page,
            f"{url}/config/automation/edit/{ids['automation']}",
            "Glass breaking started",
            out / "automation-trigger.png",
            work,
            click=True,  # open the trigger: its device and its trigger, named
        )
        await shoot(page, f"{url}/sat-audio/sounds", "Recent episodes", out / "dashboard.png", work)
        await browser.close()


def main() -> None:
    """Parse the command line and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hass", required=True, help="the command that starts Home Assistant")
    parser.add_argument("--work", type=Path, required=True, help="an empty folder to work in")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    asyncio.run(run(shlex.split(args.hass), args.work, args.out.resolve()))


if __name__ == "__main__":
    main()
