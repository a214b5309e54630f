"""The package as the index shows it: build the wheel and the sdist, read them back.

Built offline (``python -m build --no-isolation``, with the ``build`` and
``hatchling`` of the dev extra), as a release would build them.
"""

from __future__ import annotations

import email.parser
import re
import subprocess
import sys
import tarfile
import zipfile
from email.message import Message
from pathlib import Path

import pytest
from trove_classifiers import classifiers as known_classifiers

import wschat

ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = "https://github.com/wschat/wschat"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), "."],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> zipfile.ZipFile:
    (path,) = dist.glob("wschat-*.whl")
    return zipfile.ZipFile(path)


@pytest.fixture(scope="module")
def metadata(wheel: zipfile.ZipFile) -> Message:
    name = f"wschat-{wschat.__version__}.dist-info/METADATA"
    return email.parser.Parser().parsestr(wheel.read(name).decode())


def test_the_wheel_ships_the_package_its_types_and_its_license(
    wheel: zipfile.ZipFile,
) -> None:
    names = set(wheel.namelist())
    assert "wschat/py.typed" in names
    assert "wschat/testing.py" in names
    assert "wschat/testclient.py" in names
    assert "wschat/demo/page.html" in names
    assert "wschat/demo/wschat-client.js" in names  # the built JS client the page runs
    # The wire's documents: the schema and the close-code policy.
    assert "wschat/schema/protocol.schema.json" in names
    assert "wschat/schema/close-codes.json" in names
    info = f"wschat-{wschat.__version__}.dist-info"
    license_text = wheel.read(f"{info}/licenses/LICENSE").decode()
    assert license_text == (ROOT / "LICENSE").read_text()
    assert "Copyright (c) 2026 wschat developers" in license_text
    assert "Permission is hereby granted, free of charge" in license_text
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in license_text
    assert not any(name.startswith(("tests/", "docs/")) for name in names)


def test_the_metadata_names_the_license_urls_classifiers_and_keywords(
    metadata: Message,
) -> None:
    assert metadata["Name"] == "wschat"
    assert metadata["Version"] == wschat.__version__
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL") or [])
    assert urls == {
        "Homepage": REPOSITORY,
        "Documentation": f"{REPOSITORY}/blob/main/docs/index.md",
        "Changelog": f"{REPOSITORY}/blob/main/CHANGELOG.md",
        "Issues": f"{REPOSITORY}/issues",
        "Source": REPOSITORY,
    }
    classifiers = metadata.get_all("Classifier") or []
    assert set(classifiers) <= known_classifiers, set(classifiers) - known_classifiers
    assert {"Typing :: Typed", "Framework :: FastAPI", "Framework :: Trio"} <= set(
        classifiers
    )
    # PEP 639: the license is the expression; a license classifier is refused.
    assert not [c for c in classifiers if c.startswith("License ::")]
    keywords = metadata["Keywords"].split(",")
    assert {"websocket", "chat", "asgi", "fastapi", "starlette", "jwt"} <= set(keywords)
    assert metadata["Requires-Python"] == ">=3.10"


def test_the_description_is_the_readme_with_links_that_work_on_the_index(
    metadata: Message,
) -> None:
    description = metadata.get_payload()
    assert isinstance(description, str)
    assert description.strip() == (ROOT / "README.md").read_text().strip()
    assert metadata["Description-Content-Type"] == "text/markdown"
    links = LINK.findall(description)
    assert len(links) >= 10
    for link in links:
        assert link.startswith("https://"), f"relative link on the index: {link}"
        if link.startswith(f"{REPOSITORY}/blob/main/"):
            path = link.removeprefix(f"{REPOSITORY}/blob/main/").split("#")[0]
            assert (ROOT / path).is_file(), f"{link}: no {path} in the repository"
    # Every page of the docs is reachable from the package page.
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    linked = {link.rsplit("/", 1)[1] for link in links if "/docs/" in link}
    assert pages <= linked, pages - linked


def test_the_sdist_has_what_a_rebuild_needs(dist: Path) -> None:
    (path,) = dist.glob("wschat-*.tar.gz")
    with tarfile.open(path) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {
        "LICENSE",
        "README.md",
        "pyproject.toml",
        "src/wschat/py.typed",
        "src/wschat/__init__.py",
        "docs/index.md",
        "docs/testing.md",
    } <= names


def test_the_newest_changelog_release_is_this_version() -> None:
    # Keep a Changelog: [Unreleased] on top, then the newest release with its date.
    headings = re.findall(
        r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$",
        (ROOT / "CHANGELOG.md").read_text(encoding="utf-8"),
        re.M,
    )
    assert headings[0] == ("Unreleased", "")
    version, date = headings[1]
    assert version == wschat.__version__ == "0.2.0"
    assert date == "2026-12-04"
