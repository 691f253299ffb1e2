"""Print the Python requirements of the installed Home Assistant's integrations, one a line.

    ha-requirements.py [--deep] [INTEGRATION...]      default: frontend

--deep adds the requirements of the integrations they depend on, all the way down. Home
Assistant's test harness leaves out what most integrations need (the frontend itself, the
conversation agent a real server's frontend pulls in); the logbook tests and a real server need
them, at exactly the versions Home Assistant pins in each integration's manifest.
"""

import json
import sys
from importlib.util import find_spec
from pathlib import Path


def manifest(domain: str) -> dict:
    spec = find_spec(f"homeassistant.components.{domain}")
    assert spec is not None and spec.origin is not None, f"no integration {domain}"
    return json.loads((Path(spec.origin).parent / "manifest.json").read_text())


args = sys.argv[1:]
deep = "--deep" in args
todo = [arg for arg in args if arg != "--deep"] or ["frontend"]
seen: set[str] = set()
requirements: list[str] = []
while todo:
    domain = todo.pop()
    if domain in seen:
        continue
    seen.add(domain)
    found = manifest(domain)
    requirements += [r for r in found.get("requirements", []) if r not in requirements]
    if deep:
        todo += found.get("dependencies", [])
print("\n".join(requirements))
