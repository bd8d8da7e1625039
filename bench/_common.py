"""Small helpers shared by the bench scripts: the machine, the date, memory, timing, output.

Imported as `from _common import ...` (the scripts run as `python bench/<name>.py`, so
this directory is on sys.path). No torch at import time: a script that does not use it
does not pay for it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `tests.reference_code`, and uceindex without an install
    sys.path.insert(1, str(ROOT))


def base_parser(doc: str | None) -> argparse.ArgumentParser:
    """--quick and --json, the two options every bench script takes."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a minute or two")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to PATH")
    return parser


def command_line() -> str:
    """The command as typed, relative to the repository root when possible."""
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    """The first CUDA device's name, or None (imports torch only if it is already loaded)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(0)


def machine() -> dict:
    """What the figures were measured on; `load_avg` tells whether others shared the CPU."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {
        "cpu": cpu_model(),
        "cores": cores,
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": gpu_name(),
        "python": platform.python_version(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    for name in ("torch", "numpy", "scipy"):
        module = sys.modules.get(name)
        if module is not None:
            info[name] = module.__version__
    return info


def machine_line(m: dict) -> str:
    gpu = m["gpu"] or "no GPU"
    return f"{m['cpu']}, {m['cores']} cores, {m['ram_gb']:g} GB RAM, {gpu}"


def rss_mb() -> float:
    """Resident memory now, in MiB."""
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """Peak resident memory in MiB: since the last reset_peak_rss(), else since exec.

    Linux reads VmHWM: getrusage's ru_maxrss would also count the parent's RSS at fork
    time in a spawned child, and cannot be reset."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def reset_peak_rss() -> bool:
    """Restart the peak at the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Timer:
    seconds: float = 0.0


@contextmanager
def timer():
    """`with timer() as t: ...` then `t.seconds`."""
    t = Timer()
    start = time.perf_counter()
    try:
        yield t
    finally:
        t.seconds = time.perf_counter() - start


def best_of(fn, repeats: int) -> float:
    """Fastest of `repeats` calls, in seconds: the least disturbed by other work on the machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def print_table(title: str, columns: list[str], rows: list[list]) -> None:
    """A rich table when rich is installed, plain aligned text otherwise."""
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(f"\n{title}")
        for r in [columns, *cells]:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
        return
    table = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i == 0 else "right")
    for r in cells:
        table.add_row(*r)
    Console(width=max(80, len(title), sum(w + 3 for w in widths) + 1)).print(table)


def write_json(path: str | os.PathLike | None, payload: dict) -> None:
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"wrote {path}")
