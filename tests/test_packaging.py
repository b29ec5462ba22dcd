"""The oldest-versions test run pins what setup.cfg declares.

``.ci/run`` runs the suite a second time with ``.ci/oldest-constraints.txt``.
That run shows the declared minimums are true only while the file pins each
of them: the last patch release of the declared minimum (``numpy>=1.24``
pinned to ``1.24.x``), for install_requires and every extra but ``docs``,
and nothing else.
"""

import configparser
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / ".ci" / "oldest-constraints.txt"
SETUP_CFG = ROOT / "setup.cfg"

pytestmark = pytest.mark.skipif(
    not (CONSTRAINTS.exists() and SETUP_CFG.exists()),
    reason="needs a checkout of the repository",
)

_REQUIREMENT = re.compile(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*>=\s*([\d.]+)$")


def _name(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _release(version, length):
    """The first ``length`` numbers of a version, padded with zeros."""
    numbers = [int(part) for part in version.split(".")]
    return tuple(numbers + [0] * length)[:length]


def _pins_release_of(pin, minimum):
    """Whether ``pin`` is a release of ``minimum`` (8 -> 8.0.x, 1.6.1 -> 1.6.1)."""
    length = max(2, minimum.count(".") + 1)
    return _release(pin, length) == _release(minimum, length)


def _declared_minimums():
    config = configparser.ConfigParser()
    config.read(SETUP_CFG, encoding="utf-8")
    sections = [config["options"]["install_requires"]]
    sections += [
        text
        for extra, text in config["options.extras_require"].items()
        if extra != "docs"
    ]
    minimums = {}
    for text in sections:
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            match = _REQUIREMENT.fullmatch(line)
            assert match, f"setup.cfg: {line!r} has no minimum (name>=version)"
            minimums[_name(match[1])] = match[2]
    return minimums


def _pins():
    pins = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[_name(name)] = version.strip()
    return pins


def test_every_declared_minimum_is_pinned_at_its_release():
    minimums, pins = _declared_minimums(), _pins()
    assert set(minimums) <= set(pins), (
        f"{CONSTRAINTS.name} lacks {sorted(set(minimums) - set(pins))}"
    )
    stale = {
        name: (minimum, pins[name])
        for name, minimum in minimums.items()
        if not _pins_release_of(pins[name], minimum)
    }
    assert not stale, f"declared minimum and pin differ: {stale}"


def test_nothing_else_is_pinned():
    extra = set(_pins()) - set(_declared_minimums())
    assert not extra, f"{CONSTRAINTS.name} pins what setup.cfg does not name: {extra}"
