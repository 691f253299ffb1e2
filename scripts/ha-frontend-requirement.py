"""Print the frontend requirement of the installed Home Assistant (home-assistant-frontend==N).

Home Assistant's test harness leaves the frontend out; the logbook and a real server need it,
at exactly the version Home Assistant's frontend component pins.
"""

import json
from importlib.util import find_spec
from pathlib import Path

spec = find_spec("homeassistant.components.frontend")
assert spec is not None and spec.origin is not None, "Home Assistant is not installed"
manifest = json.loads((Path(spec.origin).parent / "manifest.json").read_text())
print(next(r for r in manifest["requirements"] if r.startswith("home-assistant-frontend")))
