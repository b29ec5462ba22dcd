"""EM over the row chunks of dask arrays at 20,000,000 x 20, against in memory.

``MixtureOfExpertsRegressor.fit`` on dask arrays runs exact EM as
map-reduce passes over the row chunks (``mixexp/_chunked.py``), never
gathering X. This script measures, on the same data generator and model:

- **time per EM iteration** and **rows per second** of the chunked fit on
  ``--n-rows`` (20,000,000) x 20 rows, against the in-memory fit (NumPy
  arrays) on ``--in-memory-rows`` (2,000,000), the first rows of the same
  data;
- **peak memory** of each fit: the ``tracemalloc`` peak of the fitting
  process above what it held before the fit, as a multiple of that run's
  ``X.nbytes`` (NumPy registers its array buffers with tracemalloc; memory
  inside BLAS, and pages of a memory-mapped file, are not seen);
- the **memory acceptance**: a fit on ``--memory-rows`` (4,000,000) x 20
  lazily generated rows peaks below 25 % of X's size;
- where a pass's time goes: the passes of each kind (the fit's first pass,
  E-steps with the experts' moments, the gate's loss and gradient, its
  Hessian) in the set-up and in each later iteration, their wall time, and
  the compute of one chunk of each kind timed alone on one thread.

Data (``make_data``): ``X ~ N(0, 1)``, chunk i of ``--chunk-rows`` rows
drawn by ``numpy.random.default_rng([seed, 0, i]).standard_normal`` in one
task (``da.map_blocks``), and ``y = 3 sin(2 x0) + 2 |x1| + x2 x3 + 0.3 X b
+ N(0, 0.3^2)``, ``b`` from ``numpy.random.default_rng(seed)``, computed
from chunk i of X by one task (the noise from ``default_rng([seed, 1,
i])``): the surface of ``scale.py``'s default fits, generated chunk by
chunk and again at every pass. Every array is a row slice of one lazily
generated array, so the in-memory rows are the first rows of the chunked
ones. The generator counts the chunks of X it makes (in this process).
``--source npy`` writes the chunks once into ``.npy`` files
(``numpy.lib.format.open_memmap``) in a temporary directory and fits
``da.from_array`` of readers that map the files in each task
(`NpyRows`).

Model: ``MixtureOfExpertsRegressor(LinearRegression(), n_experts=8,
partition="random", random_state=0, tol=0)``, default softmax gate.

Time per EM iteration: one fit with ``max_iter = 1 + --iters`` and
``verbose=2``; mixexp prints a line at the end of every iteration (in
memory and over chunks alike), whose times this script records. An
iteration's time is the time between two such lines; the reported figure
is ``(t_last - t_first) / --iters``: the iterations after the first, so
the set-up (first pass, start, the first and cold gate fit) is left out and
reported apart as "set-up + 1st iteration".

Run from the repository root::

    python benchmarks/out_of_core.py                  # lazy data, threads
    python benchmarks/out_of_core.py --source npy     # from .npy files
    python benchmarks/out_of_core.py --distributed    # on a LocalCluster
"""

import argparse
import contextlib
import gc
import io
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dask
import dask.array as da
import numpy as np
from _common import (
    LoadMeter,
    fmt,
    markdown_table,
    print_machine,
    traced_peak,
    write_section,
)
from dask.array.core import normalize_chunks
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression

import mixexp._chunked as chunked
from mixexp import MixtureOfExpertsRegressor

N_FEATURES = 20
N_ROWS = 20_000_000
IN_MEMORY_ROWS = 2_000_000
MEMORY_ROWS = 4_000_000
MEMORY_TARGET = 0.25  # peak traced memory of the fit / X.nbytes
CHUNK_ROWS = 100_000
N_EXPERTS = 8
ITERS = 3
SEED = 0
# The fits whose memory is traced stop after the first iteration: it holds
# every kind of pass (the first pass, E-steps, the gate's loss, gradient and
# Hessian); later iterations repeat two of them.
MEMORY_MAX_ITER = 1

# What each kind of pass computes (the functions mixexp maps over chunks).
PASS_NAMES = {
    "_data_summary": "first pass: checks, column moments",
    "_block_targets": "E-step + experts' moments (+ gate loss at start)",
    "_block_gate_loss": "gate loss and gradient (E-step inside)",
    "_block_gate_hessian": "gate Hessian",
    "_block_gate_usage": "gate usage (load balance), once at the end",
    "_block_newton_trials": "generalised linear experts' step check",
    "_block_sample": "k-means: sample rows to seed it",
    "_block_cluster_sums": "k-means: one Lloyd iteration",
}


# ----------------------------------------------------------------------
# Data.


class Counter:
    """A count shared by the threads of this process."""

    def __init__(self):
        self._lock = threading.Lock()
        self.value = 0

    def add(self):
        with self._lock:
            self.value += 1

    def __reduce__(self):  # sent to a cluster's workers: a count of their own
        return (Counter, ())


# How many chunks of X this process has generated (a distributed cluster's
# workers count in their own processes, unseen).
X_CHUNKS_MADE = Counter()


def _x_block(seed, block_info=None):
    """Chunk i of X: ``default_rng([seed, 0, i]).standard_normal``."""
    info = block_info[None]
    X_CHUNKS_MADE.add()
    index = info["chunk-location"][0]
    return np.random.default_rng([seed, 0, index]).standard_normal(info["chunk-shape"])


def _surface_block(X, b, seed, block_info=None):
    """y of one chunk of X: the surface of scale.py's default fits."""
    index = block_info[0]["chunk-location"][0]
    noise = np.random.default_rng([seed, 1, index]).normal(0.0, 0.3, X.shape[0])
    return (
        3.0 * np.sin(2.0 * X[:, 0])
        + 2.0 * np.abs(X[:, 1])
        + X[:, 2] * X[:, 3]
        + 0.3 * np.einsum("ij,j->i", X, b)  # no BLAS threads beside dask's
        + noise
    )


def make_data(n_rows, chunk_rows, seed=SEED):
    """Lazily generated X (n_rows x 20) and y, chunked along the rows.

    One task per chunk of X, one per chunk of y (from that chunk of X).
    `chunk_rows` may be ``"auto"``: dask's default chunk size.
    """
    chunks = normalize_chunks((chunk_rows, -1), (n_rows, N_FEATURES), dtype=np.float64)
    X = da.map_blocks(
        _x_block, seed, chunks=chunks, dtype=np.float64, meta=np.empty((0, 0))
    )
    b = np.random.default_rng(seed).standard_normal(N_FEATURES)
    y = X.map_blocks(
        _surface_block, b, seed, drop_axis=1, dtype=np.float64, meta=np.empty(0)
    )
    return X, y


class NpyRows:
    """An ``.npy`` file read through a memory map opened by each task.

    What ``da.from_array`` is given instead of the memory map itself: dask
    reads a ``numpy.memmap`` whole when it builds the graph (its token
    hashes the contents, and ``from_array`` holds more than the file again:
    the resident set grew by twice the file for a 0.8 GB one), and a
    cluster would be sent its contents. Only the path and shape travel;
    a task maps the file and reads its own rows.
    """

    def __init__(self, path):
        self.path = str(path)
        array = np.load(self.path, mmap_mode="r")
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        self.mtime = os.stat(self.path).st_mtime_ns

    def __dask_tokenize__(self):
        return ("NpyRows", self.path, self.mtime, self.shape, str(self.dtype))

    def __getitem__(self, key):
        return np.asarray(np.load(self.path, mmap_mode="r")[key])


def write_npy(X, y, directory):
    """Write lazy X and y chunk by chunk into .npy files; return the paths."""
    from numpy.lib.format import open_memmap

    paths = Path(directory) / "X.npy", Path(directory) / "y.npy"
    X_file = open_memmap(paths[0], mode="w+", dtype=np.float64, shape=X.shape)
    y_file = open_memmap(paths[1], mode="w+", dtype=np.float64, shape=y.shape)
    start = 0
    for X_block, y_block in zip(X.blocks, y.blocks, strict=True):
        x_values, y_values = local_compute(X_block, y_block)
        stop = start + len(x_values)
        X_file[start:stop] = x_values
        y_file[start:stop] = y_values
        start = stop
    for array in (X_file, y_file):
        array.flush()
    del X_file, y_file
    for path in paths:
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    return paths


def local_compute(*arrays):
    """Compute dask arrays in this process, whatever the active scheduler.

    A distributed scheduler warns when keys a fit computed (from the
    optimised graphs of ``to_delayed``) are sent again with other tasks
    (dask/dask#9888): what this script computes outside the fits stays off
    the cluster.
    """
    return dask.compute(*arrays, scheduler="threads")


def evict_from_page_cache(paths):
    """Ask the kernel to drop the files' (clean) pages from its cache."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def npy_arrays(paths, chunk_rows):
    """Dask arrays of the .npy files, chunked along the rows (`NpyRows`)."""
    X = da.from_array(NpyRows(paths[0]), chunks=(chunk_rows, -1))
    y = da.from_array(NpyRows(paths[1]), chunks=(chunk_rows,))
    return X, y


# ----------------------------------------------------------------------
# Measuring a fit.


def make_model(max_iter, verbose=0, n_experts=N_EXPERTS):
    return MixtureOfExpertsRegressor(
        LinearRegression(),
        n_experts=n_experts,
        partition="random",
        random_state=0,
        max_iter=max_iter,
        tol=0.0,
        verbose=verbose,
    )


def fit_quietly(model, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y)


class IterationStamps(io.TextIOBase):
    """A stdout that records when mixexp prints the end of an iteration."""

    def __init__(self):
        self.times = []
        self._line = ""

    def writable(self):
        return True

    def write(self, text):
        now = time.perf_counter()
        self._line += text
        *lines, self._line = self._line.split("\n")
        self.times.extend(now for line in lines if "Iteration" in line)
        return len(text)


class PassLog:
    """Records every map-reduce pass of chunked fits while active.

    Wraps ``ChunkedRows.map_reduce`` (restored on exit) to note the function
    mapped over the chunks, its arguments (to time one chunk of it later),
    when the pass started and ended, and how many chunks of X this process
    generated during it, per chunk of the pass.
    """

    def __init__(self):
        self.passes = []

    def __enter__(self):
        self._original = original = chunked.ChunkedRows.map_reduce
        log = self.passes

        def map_reduce(rows, function, *args):
            made = X_CHUNKS_MADE.value
            start = time.perf_counter()
            result = original(rows, function, *args)
            end = time.perf_counter()
            made = (X_CHUNKS_MADE.value - made) / len(rows.sizes)
            log.append((function, args, start, end, made))
            return result

        chunked.ChunkedRows.map_reduce = map_reduce
        return self

    def __exit__(self, *exc):
        chunked.ChunkedRows.map_reduce = self._original


def _cpu_seconds():
    t = os.times()
    return t.user + t.system


def timed_fit(X, y, iters, n_experts):
    """One fit with max_iter = 1 + iters; per-iteration times from stamps."""
    stamps = IterationStamps()
    with PassLog() as log, contextlib.redirect_stdout(stamps):
        cpu = _cpu_seconds()
        start = time.perf_counter()
        model = fit_quietly(make_model(1 + iters, 2, n_experts), X, y)
        end = time.perf_counter()
        cpu = _cpu_seconds() - cpu
    times = stamps.times
    if len(times) != 1 + iters:
        raise RuntimeError(f"expected {1 + iters} iteration lines, got {len(times)}")
    return {
        "model": model,
        "total_s": end - start,
        "setup_s": times[0] - start,
        "iter_s": (times[-1] - times[0]) / iters,
        "iters_s": list(np.diff(times)),
        "cores": cpu / (end - start),
        "passes": log.passes,
        "stamps": [start, *times],
    }


def _read_block(X, y, w, index, classes):
    """A pass that only produces the chunks (and reads every value)."""
    return float(X.sum() + y.sum())


def data_pass(X, y):
    """A pass that only produces (generates or reads) the chunks.

    Returns its wall time and the chunks of X generated per chunk.
    """
    rows = chunked.ChunkedRows(*chunked.check_chunked_data(X, y, None))
    made = X_CHUNKS_MADE.value
    start = time.perf_counter()
    rows.map_reduce(_read_block)
    seconds = time.perf_counter() - start
    return seconds, (X_CHUNKS_MADE.value - made) / len(rows.sizes)


def _chunk_seconds(func, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def pass_breakdown(fit, X, y, workers, data, counted):
    """Passes of each kind: counts, wall time, one chunk's compute alone."""
    start, first, last = fit["stamps"][0], fit["stamps"][1], fit["stamps"][-1]
    iters = len(fit["stamps"]) - 2
    n_chunks = len(X.chunks[0])
    X0, y0 = local_compute(X.blocks[0], y.blocks[0])
    w0 = None
    produce = _chunk_seconds(
        lambda: _read_block(*local_compute(X.blocks[0], y.blocks[0]), None, 0, None)
    )
    rows = []
    kinds = []
    for function, *_ in fit["passes"]:
        if function.__name__ not in kinds:
            kinds.append(function.__name__)
    for name in kinds:
        passes = [p for p in fit["passes"] if p[0].__name__ == name]
        function, args = passes[-1][0], passes[-1][1]
        in_setup = sum(1 for p in passes if start <= p[3] <= first)
        later = sum(1 for p in passes if first < p[3] <= last)
        wall = float(np.mean([p[3] - p[2] for p in passes]))
        made = float(np.mean([p[4] for p in passes])) if counted else "-"
        compute = _chunk_seconds(
            lambda f=function, a=args: chunked._run_block(f, X0, y0, w0, 0, None, *a)
        )
        ideal = (produce + compute) * n_chunks / workers
        rows.append(
            [
                PASS_NAMES.get(name, name),
                in_setup,
                later / iters if iters else None,
                wall,
                made,
                produce * 1e3,
                compute * 1e3,
                ideal,
                wall / ideal,
            ]
        )
    ideal = produce * n_chunks / workers
    rows.append(
        [
            "data only: produce the chunks, sum them",
            "-",
            "-",
            data[0],
            data[1] if counted else "-",
            produce * 1e3,
            "-",
            ideal,
            data[0] / ideal,
        ]
    )
    return rows


# ----------------------------------------------------------------------
# Distributed workers' resident memory.


def _worker_reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return _worker_status("VmRSS")


def _worker_status(field="VmHWM"):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


def peak_memory(X, y, n_experts, client=None):
    """Peaks of one fit with ``max_iter=MEMORY_MAX_ITER``, in bytes.

    The tracemalloc peak of this process above what it held before the fit
    and, on a cluster (`client`), the largest rise of a worker's peak
    resident set (``VmHWM``, reset before the fit), else None.
    """
    before = client.run(_worker_reset_peak) if client is not None else None
    traced = traced_peak(
        lambda: fit_quietly(make_model(MEMORY_MAX_ITER, n_experts=n_experts), X, y)
    )
    if client is None:
        return traced, None
    after = client.run(_worker_status)
    rises = [after[w] - before[w] for w in before if before[w] is not None and after[w]]
    return traced, (max(rises) if rises else None)


# ----------------------------------------------------------------------
# The runs.


def _print_row(values):
    print(" | ".join(fmt(v) for v in values), flush=True)


RUN_HEADERS = [
    "fit",
    "rows n",
    "X, GB",
    "chunks x rows",
    "set-up + 1st iteration, s",
    "EM iteration, s",
    "iterations timed, s",
    "rows / s (per iteration)",
    "data pass, s",
    "iteration / data pass",
    "peak traced, MiB",
    "peak / X.nbytes",
    "cores busy",
]


def run_row(label, X, fit, peak, chunks, pass_seconds=None, cores=True):
    n = X.shape[0]
    return [
        label,
        f"{n:,}",
        X.nbytes / 1e9,
        chunks,
        fit["setup_s"],
        fit["iter_s"],
        ", ".join(f"{t:.3g}" for t in fit["iters_s"]),
        f"{n / fit['iter_s']:,.0f}",
        pass_seconds if pass_seconds is not None else "-",
        fit["iter_s"] / pass_seconds if pass_seconds is not None else "-",
        peak / 2**20,
        peak / X.nbytes,
        fit["cores"] if cores else "-",
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=["lazy", "npy"], default="lazy")
    parser.add_argument("--n-rows", type=int, default=N_ROWS)
    parser.add_argument("--in-memory-rows", type=int, default=IN_MEMORY_ROWS)
    parser.add_argument("--memory-rows", type=int, default=MEMORY_ROWS)
    parser.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS)
    parser.add_argument("--n-experts", type=int, default=N_EXPERTS)
    parser.add_argument(
        "--iters", type=int, default=ITERS, help="EM iterations timed after the 1st"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count(),
        help="threads of dask's threaded scheduler, or worker processes of "
        "--distributed (default: the cores)",
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="run on a distributed.LocalCluster (processes, 1 thread each)",
    )
    parser.add_argument(
        "--tmpdir", default=None, help="--source npy: directory of the files"
    )
    parser.add_argument("--no-write", action="store_true", help="no RESULTS.md")
    args = parser.parse_args(argv)

    machine = print_machine()
    meter = LoadMeter()
    run_start = time.perf_counter()
    n_total = max(args.n_rows, args.in_memory_rows, args.memory_rows)
    X_all, y_all = make_data(n_total, args.chunk_rows)
    K = args.n_experts

    client = cluster = None
    if args.distributed:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True
        )
        client = Client(cluster)
        scheduler = contextlib.nullcontext()
        where = (
            f"distributed.LocalCluster(n_workers={args.workers}, "
            "threads_per_worker=1, processes=True)"
        )
    else:
        scheduler = dask.config.set(scheduler="threads", num_workers=args.workers)
        where = f"dask's threaded scheduler, {args.workers} threads"
    print(f"Scheduler: {where}\n", flush=True)

    tmp = None
    try:
        with scheduler:
            # Warm-up: imports, thread pools, caches; nothing of it is traced.
            X_small, y_small = (
                X_all[: 4 * args.chunk_rows],
                y_all[: 4 * args.chunk_rows],
            )
            fit_quietly(make_model(2, n_experts=K), X_small, y_small)
            fit_quietly(make_model(2, n_experts=K), *local_compute(X_small, y_small))
            timed_fit(X_small, y_small, 1, K)

            # In memory: the first rows of the same data, as NumPy arrays.
            print(f"In-memory fit, {args.in_memory_rows:,} x {N_FEATURES}", flush=True)
            Xn, yn = local_compute(
                X_all[: args.in_memory_rows], y_all[: args.in_memory_rows]
            )
            memory_fit = timed_fit(Xn, yn, args.iters, K)
            memory_peak, _ = peak_memory(Xn, yn, K)
            memory_row = run_row(
                "in memory (NumPy arrays)", Xn, memory_fit, memory_peak, "-"
            )
            _print_row(memory_row)
            Xn = yn = None  # free the in-memory rows
            gc.collect()

            # Memory acceptance: lazily generated rows.
            print(
                f"Memory acceptance, {args.memory_rows:,} x {N_FEATURES} lazy",
                flush=True,
            )
            X_acc, y_acc = X_all[: args.memory_rows], y_all[: args.memory_rows]
            accept_peak, accept_workers = peak_memory(X_acc, y_acc, K, client)
            print(f"peak / X.nbytes {accept_peak / X_acc.nbytes:.3f}", flush=True)
            # The same rows in dask's default chunks (array.chunk-size).
            X_auto, y_auto = make_data(args.memory_rows, "auto")
            auto_rows = X_auto.chunks[0][0]
            auto_peak, auto_workers = peak_memory(X_auto, y_auto, K, client)
            print(
                f"dask's default chunks ({auto_rows:,} rows): peak / X.nbytes "
                f"{auto_peak / X_auto.nbytes:.3f}",
                flush=True,
            )

            # Chunked at n rows.
            X, y = X_all[: args.n_rows], y_all[: args.n_rows]
            source_text = "lazily generated (dask arrays)"
            cold_pass = None
            if args.source == "npy":
                need = (X.nbytes + y.nbytes) * 1.05
                directory = args.tmpdir or tempfile.gettempdir()
                free = shutil.disk_usage(directory).free
                if free < need:
                    raise SystemExit(
                        f"{directory} has {free / 1e9:.1f} GB free; the .npy files "
                        f"need {need / 1e9:.1f} GB. Pass --tmpdir."
                    )
                tmp = tempfile.TemporaryDirectory(dir=directory)
                write_start = time.perf_counter()
                paths = write_npy(X, y, tmp.name)
                print(
                    f"Wrote {X.nbytes / 1e9:.2f} GB of .npy files in "
                    f"{time.perf_counter() - write_start:.0f} s",
                    flush=True,
                )
                X, y = npy_arrays(paths, args.chunk_rows)
                evict_from_page_cache(paths)
                cold_pass, _ = data_pass(X, y)
                source_text = (
                    "from .npy files, memory-mapped by each task (`da.from_array` of "
                    "a reader holding the path); 'data pass' "
                    "is timed after the files' first pass, made from a cold page "
                    "cache (summary table)"
                )
            n_chunks = len(X.chunks[0])
            chunk_text = f"{n_chunks} x {args.chunk_rows:,}"
            print(
                f"Chunked fit, {args.n_rows:,} x {N_FEATURES}, {chunk_text}",
                flush=True,
            )
            data = data_pass(X, y)
            chunk_fit = timed_fit(X, y, args.iters, K)
            chunk_peak, chunk_workers = peak_memory(X, y, K, client)
            chunk_row = run_row(
                "over chunks (dask)",
                X,
                chunk_fit,
                chunk_peak,
                chunk_text,
                data[0],
                cores=client is None,
            )
            _print_row(chunk_row)
            counted = args.source == "lazy" and client is None
            breakdown = pass_breakdown(chunk_fit, X, y, args.workers, data, counted)
    finally:
        if client is not None:
            client.close()
            cluster.close()
        if tmp is not None:
            tmp.cleanup()

    elapsed = time.perf_counter() - run_start
    load = meter.text()

    # Tables.
    runs = markdown_table(RUN_HEADERS, [memory_row, chunk_row])
    speed = (args.n_rows / chunk_fit["iter_s"]) / (
        args.in_memory_rows / memory_fit["iter_s"]
    )
    summary = markdown_table(
        ["figure", "value"],
        [
            [
                "rows / s over chunks / rows / s in memory (per EM iteration)",
                f"{speed:.2f}",
            ],
            [
                "EM iteration over chunks / in memory (rows "
                f"{args.n_rows / args.in_memory_rows:g}x)",
                f"{chunk_fit['iter_s'] / memory_fit['iter_s']:.2f}",
            ],
        ]
        + (
            [["data pass from a cold page cache, s", f"{cold_pass:.1f}"]]
            if cold_pass is not None
            else []
        ),
    )
    pass_table = markdown_table(
        [
            "pass",
            "in set-up + 1st iteration",
            "per later iteration",
            "wall per pass, s",
            "chunks of X generated per chunk",
            "one chunk: produce, ms",
            "one chunk: compute, ms",
            "ideal pass, s",
            "wall / ideal",
        ],
        breakdown,
    )
    X_acc_bytes = args.memory_rows * N_FEATURES * 8
    chunk_bytes = args.chunk_rows * N_FEATURES * 8
    client_note = " (client process only)" if client is not None else ""
    target_text = f"< {MEMORY_TARGET:g} ({MEMORY_TARGET * X_acc_bytes / 2**20:.0f} MiB)"

    def ratio_text(peak):
        return f"{peak / X_acc_bytes:.3f} ({peak / 2**20:.0f} MiB)"

    def verdict(peak):
        return "met" if peak < MEMORY_TARGET * X_acc_bytes else "NOT met"

    auto_bytes = auto_rows * N_FEATURES * 8
    accept_rows = [
        [
            f"chunks of {args.chunk_rows:,} rows: peak traced memory of the fit "
            "/ X.nbytes" + client_note,
            ratio_text(accept_peak),
            target_text,
            verdict(accept_peak),
        ],
        [
            "the same peak / (workers x one chunk of X)",
            f"{accept_peak / (args.workers * chunk_bytes):.2f}",
            "-",
            "-",
        ],
        [
            f"dask's default chunks ({auto_rows:,} rows, "
            f"{auto_bytes / 2**20:.0f} MiB of X): peak traced / X.nbytes" + client_note,
            ratio_text(auto_peak),
            target_text,
            verdict(auto_peak),
        ],
        [
            "the same peak / (workers x one chunk of X)",
            f"{auto_peak / (args.workers * auto_bytes):.2f}",
            "-",
            "-",
        ],
    ]
    if accept_workers is not None:
        accept_rows += [
            [
                f"chunks of {args.chunk_rows:,} rows: largest rise of a worker's "
                "peak resident set / X.nbytes",
                ratio_text(accept_workers),
                "-",
                "-",
            ],
            [
                "dask's default chunks: largest rise of a worker's peak resident "
                "set / X.nbytes",
                ratio_text(auto_workers) if auto_workers is not None else "-",
                "-",
                "-",
            ],
        ]
    accept_table = markdown_table(["figure", "measured", "target", ""], accept_rows)

    print("\nRuns")
    print(runs)
    print()
    print(summary)
    print("\nPasses of the chunked fit")
    print(pass_table)
    print(f"\nMemory acceptance, {args.memory_rows:,} x {N_FEATURES} lazy")
    print(accept_table)
    if chunk_workers is not None:
        print(
            f"Chunked fit: largest rise of a worker's peak resident set "
            f"{chunk_workers / 2**20:.0f} MiB"
        )
    print(f"\nTotal run time {elapsed:.0f} s. {load}")

    description = (
        f"Data: `X ~ N(0, 1)`, {args.n_rows:,} x {N_FEATURES}, and `y = 3 sin(2 "
        "x0) + 2 |x1| + x2 x3 + 0.3 X b + N(0, 0.3^2)`, generated chunk by "
        f"chunk ({args.chunk_rows:,} rows, {chunk_bytes / 2**20:.1f} MiB of X "
        f"per chunk, seed {SEED}); the chunked fit gets them {source_text}; "
        f"the in-memory fit gets the first {args.in_memory_rows:,} rows as "
        "NumPy arrays. Model: `MixtureOfExpertsRegressor(LinearRegression(), "
        f"n_experts={K}, partition='random', random_state=0, tol=0)`, default "
        f"softmax gate. Scheduler: {where}; the in-memory fit runs in the "
        "calling thread (mixexp's EM limits BLAS to one thread). EM iteration: "
        f"one fit with `max_iter={1 + args.iters}` and `verbose=2`, the times "
        "of mixexp's end-of-iteration lines recorded; the figure is the mean "
        f"of the {args.iters} iterations after the first (each listed), "
        "'set-up + 1st iteration' the time to the first line. Rows / s: rows "
        "over the EM iteration. Data pass: a pass of the same map-reduce that "
        "only produces the chunks and sums them. Peak traced: tracemalloc over "
        f"a separate fit with `max_iter={MEMORY_MAX_ITER}` (its passes are of "
        "every kind a fit makes), above what was "
        "held before it, over that run's `X.nbytes`"
        + (
            " (the client process only: the workers' memory is not traced)"
            if client is not None
            else ""
        )
        + ". Cores busy: CPU time of the process over the fit's wall time"
        + (" ('-': the work runs in the worker processes)" if client else "")
        + f". Total run time {elapsed:.0f} s. {load}"
    )
    pass_note = (
        "Passes of the timed chunked fit, by the function mapped over the "
        "chunks: how many ran in the set-up and first iteration and in each "
        "later iteration, their mean wall time, how many chunks of X were "
        "generated per chunk of the pass (counted in the generator, lazy data "
        "on threads only: 1 if each chunk is made once); one chunk (the first) "
        "produced alone (generated or read, with y) and each function's "
        "compute on it alone, on one thread; 'ideal pass' = (produce + "
        f"compute) x {n_chunks} chunks / {args.workers} workers, what the "
        "pass would take with no scheduling cost and perfect overlap."
    )
    if any(isinstance(row[4], float) and row[4] > 1 for row in breakdown):
        pass_note += (
            " More than one chunk of X generated per chunk: X and y reach the "
            "passes as separate delayed chunks (`to_delayed()` of each, whose "
            "graph optimisation fuses the generation of X into y's tasks), so a "
            "pass makes each chunk of X once for X and again inside y's task."
        )
    accept_note = (
        f"Memory acceptance: a fit (`max_iter={MEMORY_MAX_ITER}`, the model "
        f"above) on the first {args.memory_rows:,} x {N_FEATURES} rows, lazily "
        f"generated ({X_acc_bytes / 1e6:.0f} MB of X), on {where}, after "
        "warm-up fits (imports are traced too, so they happen before); then "
        "the same generator with `chunks=('auto', -1)`, dask's default chunk "
        "size (`array.chunk-size`). The peak in chunks of X per worker does "
        "not change with n: the target holds when a chunk is small beside X."
        + (
            " The worker row: `VmHWM` of each worker process, reset through "
            "`/proc/self/clear_refs` before the fit, minus its resident set "
            "then; it sees every allocation, at page granularity."
            if client is not None
            else ""
        )
    )
    blocks = [
        description,
        runs,
        summary,
        pass_note,
        pass_table,
        accept_note,
        accept_table,
    ]
    if chunk_workers is not None:
        blocks.append(
            "Chunked fit at "
            f"{args.n_rows:,} rows: largest rise of a worker's peak resident set "
            f"{chunk_workers / 2**20:.0f} MiB."
        )
    suffix = ""
    if args.source == "npy":
        suffix += "-npy"
    if args.distributed:
        suffix += "-distributed"
    if args.workers != os.cpu_count():
        suffix += f"-workers{args.workers}"
    title = (
        f"EM over chunks of dask arrays at {args.n_rows:,} x {N_FEATURES} "
        f"({args.source}"
        + (", distributed" if args.distributed else ", threads")
        + f") against in memory at {args.in_memory_rows:,}"
    )
    if not args.no_write:
        write_section("out_of_core" + suffix, title, blocks, machine=machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
