"""The repository's packaging: three distributions sharing a PEP 420 namespace,
plus the meta-distribution that installs them."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
import re

import pytest

import smtpwire

DISTRIBUTIONS = {
    "smtpwire-common": "smtpwire.common",
    "smtpwire-client": "smtpwire.client",
    "smtpwire-server": "smtpwire.server",
}


def test_smtpwire_is_a_namespace_package() -> None:
    # PEP 420: no distribution ships smtpwire/__init__.py.
    assert getattr(smtpwire, "__file__", None) is None
    assert len(list(smtpwire.__path__)) >= 1


@pytest.mark.parametrize(("distribution", "package"), DISTRIBUTIONS.items())
def test_each_distribution_is_installed_and_typed(distribution: str, package: str) -> None:
    assert importlib.metadata.version(distribution) == importlib.metadata.version("smtpwire-common")
    module = importlib.import_module(package)
    assert module.__doc__
    assert importlib.resources.files(package).joinpath("py.typed").is_file()
    shipped = importlib.metadata.files(distribution) or []
    roots = {
        file.parts[1] for file in shipped if file.parts[0] == "smtpwire" and len(file.parts) > 2
    }
    # An editable install (development) lists no files under smtpwire/ at all.
    assert roots <= {package.split(".")[1]}, f"{distribution} ships {roots}"
    assert not any(str(file) == "smtpwire/__init__.py" for file in shipped)


def test_meta_distribution_requires_the_three() -> None:
    try:
        requirements = importlib.metadata.requires("smtpwire") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the meta-distribution is not installed (nox installs it)")
    names = {re.split(r"[ =<>!~;\[]", requirement, maxsplit=1)[0] for requirement in requirements}
    assert names == set(DISTRIBUTIONS)


def test_common_has_no_dependencies() -> None:
    assert not importlib.metadata.requires("smtpwire-common")


def test_the_server_distribution_registers_the_pytest_plugin() -> None:
    try:
        entries = importlib.metadata.distribution("smtpwire-server").entry_points
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - nox installs it
        pytest.skip("smtpwire-server is not installed")
    plugins = [entry for entry in entries if entry.group == "pytest11"]
    assert [(entry.name, entry.value) for entry in plugins] == [
        ("smtpwire", "smtpwire.server.testing.pytest_plugin")
    ]
    assert plugins[0].load().smtp_server is not None
