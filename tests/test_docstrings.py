"""Docstrings and documentation pages: numpydoc validation and examples.

Every public name (each name in the ``__all__`` of a public module) and each
of its public methods is validated with numpydoc's checks; every docstring's
Examples section, and every example on the documentation pages, runs as a
doctest. The API reference (docs/api.rst) must list every public name.
"""

import doctest
import importlib
import inspect
import re
import sys
from pathlib import Path

import pytest

numpydoc_validate = pytest.importorskip("numpydoc.validate")

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

PUBLIC_MODULES = [
    "mixexp",
    "mixexp.datasets",
    "mixexp.exceptions",
    "mixexp.gating",
    "mixexp.partition",
    "mixexp.plotting",
    "mixexp.routing",
]

# Checks skipped everywhere, with the reason.
IGNORED_CHECKS = {
    "ES01": "an extended summary is optional: a one-line summary is often all "
    "a short method needs",
    "RT02": "scikit-learn's convention names the returned estimator "
    "('self : object'), which this check reads as a name without a type",
}

# Checks skipped for methods only: classes and functions keep them.
IGNORED_FOR_METHODS = {
    "EX01": "a class's Examples section shows its methods in use; methods are "
    "not each given their own",
    "SA01": "See Also is kept for classes and functions, where it points to "
    "the alternatives",
}

# Docstrings that fail a check today, by public name and numpydoc code. Each
# entry is strict: the test fails when a listed check starts to pass, so that
# the entry is removed with the fix. Every public docstring passes now.
KNOWN_FAILURES: dict = {}

OPTIONFLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS

try:  # the examples of mixexp.plotting draw with Agg, off screen
    import matplotlib
except ImportError:  # pragma: no cover - matplotlib is in the tests extra
    matplotlib = None
else:
    matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    """Close the figures examples leave open (pyplot warns beyond 20)."""
    yield
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


def _import(name):
    """The object a dotted public name refers to."""
    module_name, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        owner = _import(module_name)
        return getattr(owner, attr)


def _public_names():
    names = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        names.extend(
            f"{module_name}.{name}"
            for name in module.__all__
            if not name.startswith("__")
        )
    return names


def _public_methods(class_name):
    """Public methods defined in mixexp (not inherited from scikit-learn)."""
    cls = _import(class_name)
    methods = []
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") or not callable(member):
            continue
        if getattr(member, "__module__", "").startswith("mixexp"):
            methods.append(f"{class_name}.{name}")
    return methods


PUBLIC_NAMES = _public_names()
PUBLIC_CLASSES = [name for name in PUBLIC_NAMES if inspect.isclass(_import(name))]
PUBLIC_METHODS = [m for name in PUBLIC_CLASSES for m in _public_methods(name)]


def _errors(name, ignored):
    result = numpydoc_validate.validate(name)
    return {
        (code, message) for code, message in result["errors"] if code not in ignored
    }


def _check(name, ignored):
    errors = _errors(name, ignored)
    known = KNOWN_FAILURES.get(name, set())
    unexpected = sorted((code, msg) for code, msg in errors if code not in known)
    assert not unexpected, f"{name}: " + "; ".join(
        f"{code} {msg}" for code, msg in unexpected
    )
    fixed = known - {code for code, _ in errors}
    assert not fixed, (
        f"{name} now passes {sorted(fixed)}: remove them from KNOWN_FAILURES."
    )


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_public_docstring(name):
    _check(name, IGNORED_CHECKS)


@pytest.mark.parametrize("name", PUBLIC_METHODS)
def test_method_docstring(name):
    _check(name, {**IGNORED_CHECKS, **IGNORED_FOR_METHODS})


def test_known_failures_are_public_names():
    assert set(KNOWN_FAILURES) <= set(PUBLIC_NAMES) | set(PUBLIC_METHODS)


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_docstring_examples(name):
    """Each public docstring's examples run (as doctests) and pass."""
    obj = _import(name)
    finder = doctest.DocTestFinder(recurse=inspect.isclass(obj))
    tests = [
        test
        for test in finder.find(obj, name, globs={})
        if test.examples
        and (test.name == name or test.name.rpartition(".")[2] in _own_members(obj))
    ]
    if not tests and "EX01" in KNOWN_FAILURES.get(name, ()):
        pytest.skip(f"{name} has no example yet (listed in KNOWN_FAILURES)")
    assert tests, f"{name} has no example"
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} example(s) of {name} failed"


def _own_members(obj):
    """Members of a public class defined in mixexp, whose examples run here."""
    if not inspect.isclass(obj):
        return set()
    return {
        name
        for name, member in inspect.getmembers(obj)
        if not name.startswith("_")
        and getattr(member, "__module__", "").startswith("mixexp")
    }


# ----------------------------------------------------------------------------
# Documentation pages


PAGES = sorted(
    str(path.relative_to(DOCS))
    for path in [*DOCS.glob("*.rst"), *DOCS.glob("user_guide/*.rst")]
    if ">>>" in path.read_text(encoding="utf-8")
)


@pytest.mark.parametrize("page", PAGES)
def test_documentation_page_examples(page):
    """The examples on the user guide and quick start pages run and pass."""
    result = doctest.testfile(
        str(DOCS / page),
        module_relative=False,
        optionflags=OPTIONFLAGS,
        raise_on_error=False,
        verbose=False,
        report=True,
    )
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} example(s) on {page} failed"


def test_api_reference_lists_every_public_name():
    api = (DOCS / "api.rst").read_text(encoding="utf-8")
    listed = set()
    module = "mixexp"
    for line in api.splitlines():
        match = re.match(r"\.\. currentmodule:: ([\w.]+)", line.strip())
        if match:
            module = match.group(1)
        elif re.fullmatch(r"   [A-Za-z]\w*", line):
            listed.add(f"{module}.{line.strip()}")
    missing = sorted(set(PUBLIC_NAMES) - listed)
    assert not missing, f"docs/api.rst does not list {missing}"
