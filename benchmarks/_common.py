"""Helpers shared by the benchmark scripts.

- :func:`machine_info` / :func:`print_machine`: CPU model, cores, library
  versions and the BLAS in use (through threadpoolctl), so that every figure
  is read next to the machine that produced it.
- :func:`median_time`: median wall time of repeated calls.
- :func:`markdown_table`: a list of rows as a markdown table.
- :func:`write_section`: put one script's results (tables plus the exact
  command that made them) into ``benchmarks/RESULTS.md``, replacing the
  section the same script wrote on an earlier run.

The module is imported by the scripts in this folder as ``_common`` (the
scripts put their own folder on ``sys.path``), so they run as
``python benchmarks/<script>.py`` from the repository root.
"""

import datetime
import gc
import os
import platform
import re
import shlex
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"

_RESULTS_HEADER = """\
# Benchmark results

Each section below is written by one script of this folder (see
`README.md`) and replaced when that script runs again. Every section says
the machine it ran on and the exact command that produced it.
"""


def cpu_model():
    """CPU model name from /proc/cpuinfo (or the platform's best guess)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def total_memory_gib():
    """Physical memory in GiB (Linux), else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def blas_info():
    """One line per native thread pool (BLAS, OpenMP) as threadpoolctl sees it."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - threadpoolctl ships with sklearn
        return ["threadpoolctl not installed"]
    lines = []
    for pool in threadpool_info():
        parts = [
            pool.get("user_api", "?"),
            pool.get("internal_api", "?"),
            f"version {pool.get('version')}",
            f"{pool.get('num_threads')} threads",
        ]
        if pool.get("architecture"):
            parts.append(f"arch {pool['architecture']}")
        if pool.get("threading_layer"):
            parts.append(f"threading {pool['threading_layer']}")
        parts.append(Path(pool.get("filepath", "?")).name)
        lines.append(", ".join(str(p) for p in parts))
    return lines or ["no native thread pool found"]


def _cpu_times():
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields), idle


def background_load(seconds=2.0):
    """Cores kept busy by other processes, measured while this one sleeps.

    Read from /proc/stat, which counts every process on the machine (also
    those of other containers, invisible to ``ps``). Returns None where
    /proc/stat is missing. A value near 0 means the timings below ran on an
    otherwise idle machine; a value near the number of cores means they
    competed for the CPU and are pessimistic (and noisier).
    """
    try:
        total0, idle0 = _cpu_times()
        time.sleep(seconds)
        total1, idle1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    if total <= 0:
        return None
    return (total - (idle1 - idle0)) / total * (os.cpu_count() or 1)


class LoadMeter:
    """Cores kept busy by *other* processes while this script runs.

    The machine-wide busy time from /proc/stat minus this process's own CPU
    time (and its waited-for children's, e.g. Rscript), over the wall time
    since the meter started. Read it with :meth:`cores` or :meth:`text`.
    """

    def __init__(self):
        self._start = self._sample()

    @staticmethod
    def _sample():
        try:
            total, idle = _cpu_times()
        except (OSError, ValueError, IndexError):
            return None
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        return time.monotonic(), total - idle, own

    def cores(self):
        end = self._sample()
        if self._start is None or end is None:
            return None
        wall = end[0] - self._start[0]
        if wall <= 0:
            return None
        busy = (end[1] - self._start[1]) / os.sysconf("SC_CLK_TCK")
        own = end[2] - self._start[2]
        return max(busy - own, 0.0) / wall

    def text(self):
        cores = self.cores()
        if cores is None:
            return "Load of other processes during the run: unknown."
        text = (
            f"Load of other processes during the run: {cores:.2f} of "
            f"{os.cpu_count()} cores on average"
        )
        if cores > 0.25:
            text += (
                " - the machine was shared, so these timings are pessimistic "
                "and noisy (multi-threaded BLAS calls wait for a core)"
            )
        return text + "."


def git_revision():
    """Commit of the repository and whether mixexp/ has uncommitted changes."""
    import subprocess

    root = HERE.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "mixexp"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + uncommitted changes in mixexp/" if dirty else "")


def machine_info():
    """A dict describing the machine and the numerical stack."""
    import scipy
    import sklearn

    try:
        import mixexp

        mixexp_version = mixexp.__version__
    except ImportError:  # pragma: no cover
        mixexp_version = "not importable"
    memory = total_memory_gib()
    return {
        "cpu": cpu_model(),
        "logical cores": os.cpu_count(),
        "usable cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "memory": f"{memory:.1f} GiB" if memory else "unknown",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "mixexp": f"{mixexp_version} (git {git_revision()})",
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
        "blas": blas_info(),
        "background load": _load_text(background_load()),
    }


def _load_text(load):
    if load is None:
        return "unknown"
    text = f"{load:.2f} of {os.cpu_count()} cores busy with other processes"
    if load > 0.25:
        text += " (timings below are pessimistic and noisy)"
    return text


def machine_lines(info=None):
    """The machine description as markdown bullet lines."""
    info = machine_info() if info is None else info
    lines = []
    for key, value in info.items():
        if isinstance(value, list):
            lines.append(f"- {key}:")
            lines.extend(f"  - {v}" for v in value)
        else:
            lines.append(f"- {key}: {value}")
    return lines


def print_machine(info=None):
    """Print the machine description; return it as markdown lines."""
    lines = machine_lines(info)
    print("Machine")
    print("\n".join(lines))
    print()
    return lines


def median_time(func, repeats=3, warmup=0):
    """Median wall time of ``func()`` over `repeats` calls.

    Returns
    -------
    median : float
        Seconds.
    times : list of float
        Every measured call, in order.
    result : object
        What the last call returned.
    """
    result = None
    for _ in range(warmup):
        result = func()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def command_line():
    """The command that is running, as one could type it again."""
    argv = [Path(sys.argv[0]).as_posix(), *sys.argv[1:]]
    try:
        rel = Path(sys.argv[0]).resolve().relative_to(HERE.parent)
        argv[0] = rel.as_posix()
    except ValueError:
        pass
    return "python " + " ".join(shlex.quote(a) for a in argv)


def fmt(value, digits=3):
    """Compact number formatting for tables."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if not np.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    if abs(value) >= 10 ** (digits + 2) or abs(value) < 10 ** -(digits - 1):
        return f"{value:.{digits}g}"
    if abs(value) >= 100:
        return f"{value:.{max(digits - 3, 0) + 1}f}".rstrip("0").rstrip(".")
    return f"{value:.{digits}g}"


def markdown_table(headers, rows):
    """Rows (sequences of values) as a markdown table string."""
    head = "| " + " | ".join(str(h) for h in headers) + " |"
    rule = "|" + "|".join("---" for _ in headers) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def write_section(name, title, blocks, command=None, machine=None, path=RESULTS):
    """Write one script's results into RESULTS.md, replacing its old section.

    Parameters
    ----------
    name : str
        Key of the section (the script's name); the section is delimited by
        HTML comments carrying it, so a rerun replaces exactly it.
    title : str
        Heading of the section.
    blocks : list of str
        Markdown paragraphs and tables, in order.
    command : str, default=None
        The command that made the results (default: this process's).
    machine : list of str, default=None
        Markdown lines describing the machine (default: this machine).
    path : Path
        The results file.
    """
    command = command_line() if command is None else command
    machine = machine_lines() if machine is None else machine
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    parts = [
        begin,
        f"## {title}",
        "",
        f"Command (from the repository root), run {stamp}:",
        "",
        "```",
        command,
        "```",
        "",
        "<details><summary>Machine</summary>",
        "",
        *machine,
        "",
        "</details>",
        "",
    ]
    for block in blocks:
        parts.extend([block.rstrip(), ""])
    parts.append(end)
    section = "\n".join(parts)

    text = path.read_text() if path.exists() else _RESULTS_HEADER
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    if not text.endswith("\n"):
        text += "\n"
    path.write_text(text)
    print(f"Results written to {path} (section {name!r}).")


class FixedLabels:
    """A 'clusterer' whose ``fit_predict`` returns labels fixed in advance.

    Passed as ``partition=`` to a mixture, it gives EM exactly the initial
    partition another tool starts from. The mixture clones it and sets
    ``n_clusters`` (which must match the number of distinct labels).
    """

    def __init__(self, labels=None, n_clusters=None):
        self.labels = labels
        self.n_clusters = n_clusters

    def get_params(self, deep=True):
        return {"labels": self.labels, "n_clusters": self.n_clusters}

    def set_params(self, **params):
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def fit(self, X, y=None):
        if len(self.labels) != len(X):
            raise ValueError(
                f"FixedLabels holds {len(self.labels)} labels for {len(X)} rows."
            )
        self.labels_ = np.asarray(self.labels)
        return self

    def fit_predict(self, X, y=None):
        return self.fit(X).labels_


def flexmix_rule_iteration(history, n_samples, tolerance):
    """First iteration at which flexmix's stopping rule holds on a history.

    `history` holds mean log-likelihoods (mixexp's ``lower_bounds_``); the
    rule is on totals: ``|L_t - L_{t-1}| / (|L_t| + 0.1) < tolerance``.
    """
    total = np.asarray(history) * n_samples
    for t in range(1, len(total)):
        if abs(total[t] - total[t - 1]) / (abs(total[t]) + 0.1) < tolerance:
            return t + 1
    return None


def traced_peak(func):
    """Peak bytes traced (tracemalloc) while ``func()`` runs, above the start."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        func()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before
