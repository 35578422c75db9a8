"""The four distributions as they would be published: what PyPI shows (licence, project
URLs, classifiers, the readme as the long description), the licence text inside every
wheel and sdist, and ``send()``'s types as a user's mypy sees them.

``python3 -m nox -s packaging`` builds the sdists and wheels, runs ``twine check
--strict``, installs the built wheels and runs this file with SMTPWIRE_DIST naming the
directory: then nothing here may skip.  Elsewhere the artefacts are built into a
temporary directory when ``build`` is installed, and skipped otherwise."""

from __future__ import annotations

import email.message
import email.parser
import hashlib
import importlib.util
import os
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DIST_VARIABLE = "SMTPWIRE_DIST"
REQUIRED = bool(os.environ.get(DIST_VARIABLE))
DISTRIBUTIONS = {
    "smtpwire": ROOT,
    "smtpwire-common": ROOT / "packages/common",
    "smtpwire-client": ROOT / "packages/client",
    "smtpwire-server": ROOT / "packages/server",
}
VERSION = "0.1.0"
# SHA-256 of https://www.apache.org/licenses/LICENSE-2.0.txt, the unmodified text.
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
REPOSITORY = "https://github.com/smtpwire/smtpwire"
PROJECT_URLS = {
    "Homepage": REPOSITORY,
    "Documentation": f"{REPOSITORY}/tree/main/docs",
    "Source": REPOSITORY,
    "Issues": f"{REPOSITORY}/issues",
    "Changelog": f"{REPOSITORY}/blob/main/CHANGELOG.md",
}
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
ASYNCIO = "Framework :: AsyncIO"
PYTEST = "Framework :: Pytest"


def unavailable(reason: str) -> None:
    """Skip, except under ``nox -s packaging``, where the check must run."""
    if REQUIRED:
        pytest.fail(f"{reason} (required: {DIST_VARIABLE} is set)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get(DIST_VARIABLE)
    if given:
        return Path(given)
    if importlib.util.find_spec("build") is None:
        unavailable("needs the built distributions: `python3 -m nox -s packaging` runs this file")
    directory = tmp_path_factory.mktemp("dist")
    for source in DISTRIBUTIONS.values():
        subprocess.run(  # noqa: S603 - this interpreter building the repository's own packages
            [sys.executable, "-m", "build", "--outdir", str(directory), str(source)],
            capture_output=True,
            check=True,
        )
    return directory


def artefact(dist: Path, distribution: str, suffix: str) -> Path:
    stem = distribution.replace("-", "_")
    found = sorted(dist.glob(f"{stem}-{VERSION}{suffix}"))
    assert len(found) == 1, f"{distribution}: {found} in {dist}"
    return found[0]


def wheel_metadata(dist: Path, distribution: str) -> email.message.Message:
    with zipfile.ZipFile(artefact(dist, distribution, "-py3-none-any.whl")) as wheel:
        text = wheel.read(f"{distribution.replace('-', '_')}-{VERSION}.dist-info/METADATA")
    return email.parser.Parser().parsestr(text.decode())


def readme(distribution: str) -> Path:
    return DISTRIBUTIONS[distribution] / "README.md"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the sources: no build needed ----------------------------------------------------------


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_each_distribution_has_the_apache_license_text(distribution: str) -> None:
    assert digest((DISTRIBUTIONS[distribution] / "LICENSE").read_bytes()) == APACHE_2_0_SHA256


@pytest.mark.parametrize("distribution", [name for name in DISTRIBUTIONS if name != "smtpwire"])
def test_each_package_readme_points_to_the_main_one(distribution: str) -> None:
    text = readme(distribution).read_text()
    assert text.startswith(f"# {distribution}\n")
    assert f"{REPOSITORY}#readme" in text
    # PyPI shows the readme away from the repository: no link may be relative.
    assert "](docs/" not in text
    assert "](../" not in text


def test_the_changelog_keeps_an_unreleased_section_above_the_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "keepachangelog.com" in text
    assert 0 < text.index("\n## Unreleased\n") < text.index(f"\n## {VERSION}\n")


# --- the built wheels and sdists -------------------------------------------------------------


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_wheel_metadata(dist: Path, distribution: str) -> None:
    metadata = wheel_metadata(dist, distribution)
    assert metadata["Name"] == distribution
    assert metadata["Version"] == VERSION
    assert (metadata["License-Expression"] or metadata["License"]) == "Apache-2.0"
    assert metadata.get_all("License-File") in ([], None, ["LICENSE"])
    urls = dict(line.split(", ", 1) for line in metadata.get_all("Project-URL") or [])
    assert urls == PROJECT_URLS
    assert metadata["Requires-Python"] == ">=3.10"
    classifiers = metadata.get_all("Classifier") or []
    for version in PYTHONS:
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert "Programming Language :: Python :: 3 :: Only" in classifiers
    assert "Typing :: Typed" in classifiers
    # PEP 639: with a licence expression, no licence classifier.
    assert not [line for line in classifiers if line.startswith("License ::")]
    assert (PYTEST in classifiers) == (distribution == "smtpwire-server")
    # The wire core is sans-I/O: it has nothing to do with asyncio.
    assert (ASYNCIO in classifiers) == (distribution != "smtpwire-common")


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_the_readme_is_the_long_description(dist: Path, distribution: str) -> None:
    metadata = wheel_metadata(dist, distribution)
    assert metadata["Description-Content-Type"] == "text/markdown"
    description = metadata.get_payload()
    assert isinstance(description, str)
    assert description.strip() == readme(distribution).read_text().strip()


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_the_license_is_inside_the_wheel_and_the_sdist(dist: Path, distribution: str) -> None:
    stem = f"{distribution.replace('-', '_')}-{VERSION}"
    with zipfile.ZipFile(artefact(dist, distribution, "-py3-none-any.whl")) as wheel:
        names = wheel.namelist()
        licenses = [name for name in names if "/licenses/" in name]
        assert licenses == [f"{stem}.dist-info/licenses/LICENSE"]
        assert digest(wheel.read(licenses[0])) == APACHE_2_0_SHA256
    with tarfile.open(artefact(dist, distribution, ".tar.gz")) as sdist:
        license_file = sdist.extractfile(f"{stem}/LICENSE")
        assert license_file is not None
        assert digest(license_file.read()) == APACHE_2_0_SHA256
        info = sdist.extractfile(f"{stem}/PKG-INFO")
        assert info is not None
        pkg_info = email.parser.Parser().parsestr(info.read().decode())
    assert (pkg_info["License-Expression"] or pkg_info["License"]) == "Apache-2.0"
    assert len(pkg_info.get_all("Project-URL") or []) == len(PROJECT_URLS)


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_each_wheel_ships_only_its_own_package(dist: Path, distribution: str) -> None:
    with zipfile.ZipFile(artefact(dist, distribution, "-py3-none-any.whl")) as wheel:
        names = wheel.namelist()
    code = [name for name in names if not name.split("/")[0].endswith(".dist-info")]
    if distribution == "smtpwire":
        assert code == []  # the meta-distribution only pulls in the three
        return
    package = distribution.split("-")[1]
    assert code
    assert all(name.startswith(f"smtpwire/{package}/") for name in code), code
    assert f"smtpwire/{package}/py.typed" in code


# --- send()'s types, as a user's type checker sees the installed package ---------------------

TYPED_USE = textwrap.dedent(
    """\
    import email.message

    from smtpwire.client import send


    async def good() -> None:
        await send(email.message.EmailMessage(), hostname="127.0.0.1")
        await send(email.message.Message(), hostname="127.0.0.1")
        await send("Subject: hi\\r\\n\\r\\nhi\\r\\n", sender="a@x.org", recipients="b@x.org")
        await send(b"Subject: hi\\r\\n\\r\\nhi\\r\\n", sender="a@x.org", recipients=["b@x.org"])


    async def bad() -> None:
        await send(12345)  # type error
    """
)


@pytest.mark.typing
def test_mypy_reports_send_with_a_number(tmp_path: Path) -> None:
    if importlib.util.find_spec("mypy") is None:
        unavailable("needs mypy (`python3 -m nox -s packaging` installs it)")
    (tmp_path / "use_send.py").write_text(TYPED_USE)
    (tmp_path / "mypy.ini").write_text("[mypy]\n")  # none of the repository's settings
    environment = {name: value for name, value in os.environ.items() if name != "MYPYPATH"}
    result = subprocess.run(  # noqa: S603 - this interpreter's mypy on a file of ours
        [
            sys.executable, "-m", "mypy", "--strict", "--config-file", "mypy.ini",
            "--cache-dir", str(tmp_path / "cache"), "--no-error-summary", "use_send.py",
        ],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    errors = result.stdout.splitlines()
    line = TYPED_USE.splitlines().index("    await send(12345)  # type error") + 1
    assert len(errors) == 1, result.stdout + result.stderr
    assert errors[0].startswith(f'use_send.py:{line}: error: Argument 1 to "send" has incompatible')
    assert '"int"' in errors[0]
    assert errors[0].endswith("[arg-type]")
    assert result.returncode == 1
