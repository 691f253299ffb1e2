"""One place names the repository, one number is the version, and the release workflows are sound.

pyproject.toml's [project.urls] names the repository (docs/releasing.md): every other mention of
it, the add-on's image owner and the integration's code owner follow from it. The version is
pyproject's; the add-on, the integration and the package say the same. The workflows pass
actionlint (with shellcheck on their scripts), pin every action to a commit, and build the add-on
image the way addon/Dockerfile expects.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

import sat_audio

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
REPO = PROJECT["urls"]["Source"]
OWNER, NAME = REPO.removeprefix("https://github.com/").split("/")
VERSION = PROJECT["version"]

# Other projects' repositories the project's files may name (the paper's code, the label list).
THIRD_PARTY = {"RicherMans/SAT", "audioset/ontology"}
# Images the project's files may name on ghcr.io that are not its own: the add-on's base images.
THIRD_PARTY_IMAGES = {"home-assistant"}
# supervisor/addons/validate.py: what the manifest's image may be.
RE_DOCKER_IMAGE = re.compile(r"^([a-zA-Z\-\.:\d{}]+/)*?([\-\w{}]+)/([\-\w{}]+)$")
RE_GITHUB = re.compile(r"(?<![\w.-])github\.com/([A-Za-z0-9-]+)/([A-Za-z0-9_.-]+)")
RE_GHCR = re.compile(r"(?<![\w.-])ghcr\.io/([A-Za-z0-9_.{}-]+)/")
# Where the add-on's Dockerfile looks for the wheel in its build context.
WHEELS = "wheels"
TEXT_SUFFIXES = {".md", ".yaml", ".yml", ".json", ".toml", ".py", ".txt", ".cfg", ".csv"}
SKIP_DIRS = {"__pycache__", "build", "dist", "node_modules"}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _project_files() -> list[Path]:
    """The repository's own text files: sources, docs, manifests, scripts, workflows."""
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [
            d
            for d in dirs
            if d not in SKIP_DIRS
            and not d.endswith(".egg-info")
            and (not d.startswith(".") or d in {".github", ".ci"})
        ]
        for name in files:
            path = Path(folder, name)
            if path.suffix in TEXT_SUFFIXES or name in {"Dockerfile", "NOTICE"} or not path.suffix:
                found.append(path)
    return sorted(found)


def _mentions() -> list[tuple[str, str, str]]:
    """Each GitHub repository and ghcr.io owner the files name: (file:line, kind, name)."""
    mentions = []
    for path in _project_files():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            continue
        where = path.relative_to(ROOT)
        for number, line in enumerate(lines, 1):
            for owner, name in RE_GITHUB.findall(line):
                name = name.removesuffix(".git").rstrip(".")
                mentions.append((f"{where}:{number}", "github", f"{owner}/{name}"))
            for owner in RE_GHCR.findall(line):
                mentions.append((f"{where}:{number}", "ghcr", owner))
    return mentions


# --- the repository -------------------------------------------------------------------------------


def test_project_urls_are_the_one_place():
    assert re.fullmatch(r"https://github\.com/[A-Za-z0-9-]+/[A-Za-z0-9_.-]+", REPO), REPO
    assert PROJECT["urls"] == {
        "Homepage": REPO,
        "Documentation": f"{REPO}#readme",
        "Issues": f"{REPO}/issues",
        "Source": REPO,
    }


def test_manifests_name_the_repository():
    """The add-on store, HACS and the integration page take their links from these."""
    addon = _yaml(ROOT / "addon" / "config.yaml")
    manifest = json.loads((ROOT / "custom_components/sat_audio/manifest.json").read_text())
    found = {
        "addon/config.yaml url": addon["url"],
        "repository.yaml url": _yaml(ROOT / "repository.yaml")["url"],
        "manifest.json documentation": manifest["documentation"],
        "manifest.json issue_tracker": manifest["issue_tracker"],
        "manifest.json codeowners": manifest["codeowners"],
    }
    assert found == {
        "addon/config.yaml url": REPO,
        "repository.yaml url": REPO,
        "manifest.json documentation": f"{REPO}/tree/main/custom_components/sat_audio",
        "manifest.json issue_tracker": f"{REPO}/issues",
        "manifest.json codeowners": [f"@{OWNER}"],
    }


def test_addon_image_is_the_owners():
    """The Supervisor pulls the image the release pushes: under the owner, one per {arch}."""
    image = _yaml(ROOT / "addon" / "config.yaml")["image"]
    assert RE_DOCKER_IMAGE.match(image), f"the Supervisor refuses image {image!r}"
    assert image == f"ghcr.io/{OWNER.lower()}/{{arch}}-sat-audio-addon"


def test_every_mention_agrees():
    """Docs, Dockerfile, hacs.json, scripts: a GitHub repository or ghcr.io owner named
    anywhere is this one (from pyproject) or a known third party."""
    wrong = [
        f"{where}: {kind} {name}"
        for where, kind, name in _mentions()
        if (kind == "github" and name != f"{OWNER}/{NAME}" and name not in THIRD_PARTY)
        or (kind == "ghcr" and name not in {OWNER.lower(), *THIRD_PARTY_IMAGES})
    ]
    assert not wrong, f"not {REPO} (pyproject's [project.urls]):\n" + "\n".join(wrong)


def test_mentions_are_found():
    """The scan above sees the files that name the repository (or it would pass on nothing)."""
    files = {where.split(":")[0] for where, kind, _ in _mentions() if kind == "github"}
    assert {"README.md", "addon/DOCS.md", "repository.yaml", "docs/releasing.md"} <= files


# --- the version ----------------------------------------------------------------------------------


def test_one_version():
    manifest = json.loads((ROOT / "custom_components/sat_audio/manifest.json").read_text())
    versions = {
        "pyproject.toml": VERSION,
        "addon/config.yaml": _yaml(ROOT / "addon" / "config.yaml")["version"],
        "custom_components/sat_audio/manifest.json": manifest["version"],
        "sat_audio.__version__": sat_audio.__version__,
    }
    assert len(set(versions.values())) == 1, "versions differ:\n" + "\n".join(
        f"  {where}: {version}" for where, version in versions.items()
    )


def test_changelog_has_the_version():
    """The add-on's changelog opens with this version: the release's notes come from it."""
    changelog = (ROOT / "addon" / "CHANGELOG.md").read_text(encoding="utf-8")
    first = re.search(r"^## (\S+)$", changelog, re.M)
    assert first and first.group(1) == VERSION, f"addon/CHANGELOG.md needs ## {VERSION} first"


# --- the workflows --------------------------------------------------------------------------------


def test_workflows_actionlint_clean():
    actionlint = shutil.which("actionlint") or str(Path(sys.prefix) / "bin" / "actionlint")
    assert Path(actionlint).is_file(), "actionlint is missing: the test extra installs it"
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing (scripts/test installs it): actionlint needs it"
    done = subprocess.run(
        [actionlint, "-no-color", "-shellcheck", shellcheck, *sorted(WORKFLOWS.glob("*.yml"))],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_python_steps_lint_clean():
    """actionlint checks the shell steps; ruff checks the Python ones (pyflakes' rules)."""
    steps = [
        step["run"]
        for path in sorted(WORKFLOWS.glob("*.yml"))
        for job in _yaml(path)["jobs"].values()
        for step in job.get("steps", [])
        if step.get("shell") == "python"
    ]
    assert steps
    for script in steps:
        ruff = [sys.executable, "-m", "ruff", "check", "--select", "F,E9", "--stdin-filename"]
        done = subprocess.run([*ruff, "step.py", "-"], input=script, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_actions_pinned_to_commits():
    """A tag can be moved to other code; a commit cannot. The comment says which version."""
    uses = [
        (f"{path.name}:{number}", line.strip())
        for path in sorted(WORKFLOWS.glob("*.yml"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.match(r"\s*(- )?uses:", line)
    ]
    assert uses
    loose = [
        f"{where}: {line}"
        for where, line in uses
        if not re.fullmatch(r"(- )?uses: \./\.github/workflows/[\w-]+\.yml", line)
        and not re.fullmatch(r"(- )?uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+", line)
    ]
    assert not loose, "pin to a commit with a # vX.Y.Z comment:\n" + "\n".join(loose)


def _release() -> dict[str, Any]:
    return _yaml(WORKFLOWS / "release.yml")


def test_ci_runs_the_one_test_command():
    ci = _yaml(WORKFLOWS / "ci.yml")
    runs = [step.get("run") for job in ci["jobs"].values() for step in job["steps"]]
    assert ".ci/run" in runs
    assert "workflow_call" in ci[True]  # YAML 1.1 reads the key `on` as True


def test_release_on_version_tags_after_the_tests():
    release = _release()
    assert release[True] == {"push": {"tags": ["v*"]}}
    jobs = release["jobs"]
    assert jobs["test"]["uses"] == "./.github/workflows/ci.yml"

    def upstream(job: str) -> set[str]:
        needs = jobs[job].get("needs", [])
        needs = [needs] if isinstance(needs, str) else needs
        return set(needs).union(*(upstream(n) for n in needs))

    assert all("test" in upstream(job) for job in jobs if job != "test")


def test_release_builds_what_the_dockerfile_expects():
    """Every architecture the add-on offers, from addon/ with the wheel where the Dockerfile
    looks for it, with only build arguments the Dockerfile declares."""
    image_job = _release()["jobs"]["image"]
    archs = [row["arch"] for row in image_job["strategy"]["matrix"]["include"]]
    assert sorted(archs) == sorted(_yaml(ROOT / "addon" / "config.yaml")["arch"])

    steps = image_job["steps"]
    build = next(s for s in steps if s.get("uses", "").startswith("docker/build-push-action@"))
    assert build["with"]["context"] == "addon"
    assert build["with"]["push"] is True
    passed = re.findall(r"^(\w+)=", build["with"].get("build-args", ""), re.M)
    dockerfile = (ROOT / "addon" / "Dockerfile").read_text(encoding="utf-8")
    declared = re.findall(r"^ARG (\w+)", dockerfile, re.M)
    assert set(passed) <= set(declared), f"the Dockerfile declares only {declared}"

    scripts = "\n".join(s.get("run", "") for s in steps)
    assert f"cp dist/*.whl addon/{WHEELS}/" in scripts
    assert f"{WHEELS}/sat_audio-*.whl" in dockerfile


@pytest.mark.parametrize("workflow", ["ci.yml", "release.yml"])
def test_workflows_grant_least(workflow: str):
    """Read-only by default; only the jobs that publish get write access, each to its own."""
    spec = _yaml(WORKFLOWS / workflow)
    assert spec["permissions"] == {"contents": "read"}
    granted = {
        name: job["permissions"] for name, job in spec["jobs"].items() if "permissions" in job
    }
    if workflow == "release.yml":
        assert granted == {
            "image": {"contents": "read", "packages": "write"},
            "release": {"contents": "write"},
        }
    else:
        assert granted == {}
