from __future__ import annotations

import faulthandler
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest

# An xdist worker has died four times (sessions 19, 22, 23, 24: "node down: Not properly terminated", always at the
# first test of test_layers.py) with no OOM kill and no segfault in dmesg and no faulthandler dump, so something
# sent it a signal or it exited from native code. Should a catchable signal end a worker, its threads' stacks are
# written to stderr (the CI log) before the default action: the next occurrence names where it came from.
# (Not SIGINT, a developer's Ctrl-C, nor SIGPIPE, which servers under test meet as clients hang up.)
for _sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
    faulthandler.register(_sig, all_threads=True, chain=True)

# Session 24 saw it again with none of those dumps. So each xdist worker also keeps a trail (the tests it starts
# and ends, with its memory), and the controller, when a worker goes down, writes how the worker's process ended
# (exit code or the signal that killed it) and the trail's last lines into the log.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")


def _trail_file(controller_pid: int, worker: str) -> Path:
    return Path(tempfile.gettempdir()) / f"rag-rerank-pytest-{controller_pid}-{worker}.log"


def _trail(line: str) -> None:
    with open("/proc/self/statm") as fh:
        rss_mb = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20
    with _trail_file(os.getppid(), _WORKER).open("a") as fh:
        fh.write(f"{time.strftime('%H:%M:%S')} rss {rss_mb} MB {line}\n")


def _fault_file(controller_pid: int, worker: str) -> Path:
    return Path(tempfile.gettempdir()) / f"rag-rerank-pytest-{controller_pid}-{worker}.fault"


_FAULTS = []  # the open file faulthandler writes to (kept alive for the session)


def _core_pattern() -> str | None:
    """The kernel's core file name where a crashed worker's core can be read here, else None: gdb installed, and
    cores written as files in the working directory (a core_pattern that pipes them to a collector, or names
    another folder, leaves none to find)."""
    import shutil

    try:
        pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    except OSError:
        return None
    return pattern if shutil.which("gdb") and not pattern.startswith("|") and "/" not in pattern else None


def pytest_sessionstart(session):
    """In a worker: fatal errors (SIGSEGV and kin) dump every thread's stack to a file the controller prints
    if the worker goes down (session 24 caught one worker killed by SIGSEGV, with no stacks in the log).

    Session 27 saw it again (SIGSEGV at the first test of test_layers.py, RSS 4.2 GB) with that file empty:
    faulthandler's handler never ran. So where gdb can read one, a worker also leaves a core file (its soft
    limit raised to the hard one), and the controller prints every thread's native stack from it and deletes it.
    The first core read so explained the deaths: the main thread waiting on a subprocess, no thread faulting -
    a signal (the child's SIGCHLD, handled since torch's DataLoader set a handler) that could not be delivered on
    the thread's signal stack, which two OpenVINO Cores released oldest first had left unmapped. Fixed in
    rag_rerank.models.export (one Core a process; test_onnx.py checks it)."""
    if _WORKER:
        _FAULTS.append(_fault_file(os.getppid(), _WORKER).open("w"))
        faulthandler.enable(file=_FAULTS[0], all_threads=True)
        if _core_pattern():
            import resource

            resource.setrlimit(resource.RLIMIT_CORE, (resource.getrlimit(resource.RLIMIT_CORE)[1],) * 2)


def pytest_runtest_logstart(nodeid, location):
    if _WORKER:
        _trail(f"start {nodeid} (pid {os.getpid()}, cwd {os.getcwd()})")


def pytest_runtest_logfinish(nodeid, location):
    if _WORKER:
        _trail(f"end   {nodeid}")


def pytest_testnodedown(node, error):
    if not error:
        return
    popen = getattr(getattr(node.gateway, "_io", None), "popen", None)
    code = None
    if popen is not None:
        try:
            code = popen.wait(timeout=10)
        except Exception:  # noqa: BLE001 - a diagnostic must not fail the run
            code = popen.poll()
    how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
    trail = _trail_file(os.getpid(), node.gateway.id)
    tail = trail.read_text().splitlines()[-12:] if trail.exists() else ["(no trail)"]
    fault = _fault_file(os.getpid(), node.gateway.id)
    stacks = fault.read_text(errors="replace").strip() if fault.exists() else ""
    sys.stderr.write(f"\n[rag-rerank] worker {node.gateway.id} went down ({error}): its process {how}; "
                     "its last tests:\n  " + "\n  ".join(tail) + "\n"
                     + (f"[rag-rerank] its threads when it failed (faulthandler):\n{stacks}\n" if stacks else ""))
    if code is not None and code < 0:
        try:
            temp = node.config._tmp_path_factory.getbasetemp() / f"popen-{node.gateway.id}"
        except Exception:  # noqa: BLE001
            temp = None
        sys.stderr.write(_core_stacks(tail, temp))


def _core_stacks(tail: list[str], temp: Path | None) -> str:
    """Every thread's native stack from the crashed worker's core file (then deleted). The core_pattern is a plain
    file name, so the core lands in the worker's working directory then: the one its last test started in (the
    trail names it) or, where the test moved there, a folder of the worker's tmp_path tree or the examples."""
    import re
    import subprocess

    pattern = _core_pattern()
    if pattern is None:
        return "[rag-rerank] no core file read (no gdb, or cores are not written as files here)\n"
    found = next((m for m in (re.search(r"\(pid (\d+), cwd (.*)\)$", line) for line in reversed(tail)) if m), None)
    if not found:
        return ""
    pid, cwd = found.group(1), Path(found.group(2))
    name = pattern.replace("%p", pid)
    if Path("/proc/sys/kernel/core_uses_pid").read_text().strip() == "1" and "%p" not in pattern:
        name = f"{name}.{pid}"
    here = [cwd / name, Path.cwd() / name, Path(__file__).resolve().parents[1] / "examples" / name]
    for core in here + (sorted(temp.rglob(name)) if temp is not None and temp.is_dir() else []):
        if core.is_file():
            try:
                gdb = ["gdb", "-batch", "-nx", "-iex", "set auto-load off", "-ex", "info threads",
                       "-ex", "thread apply all bt 30", sys.executable, str(core)]
                out = subprocess.run(gdb, capture_output=True, text=True, timeout=600)
                return f"[rag-rerank] native stacks from {core}:\n{out.stdout[-200_000:]}\n"
            except Exception as exc:  # noqa: BLE001 - a diagnostic must not fail the run
                return f"[rag-rerank] gdb on {core} failed: {exc!r}\n"
            finally:
                core.unlink(missing_ok=True)
    return f"[rag-rerank] no core file found in {cwd}\n"


def pytest_sessionfinish(session, exitstatus):
    if not _WORKER:
        for trail in Path(tempfile.gettempdir()).glob(f"rag-rerank-pytest-{os.getpid()}-*.*"):
            trail.unlink(missing_ok=True)

# The fixtures every suite shares (the integration packages' tests take the same): offline models, a Chroma
# server, the environment the suites pin (torch backend, Triton's interpreter). Imported first: it sets
# that environment before anything imports torch or triton.
from rag_rerank.testing.fixtures import *  # noqa: F401,F403
from rag_rerank.testing.fixtures import FAQ

# Small samples of the Korean data sets, with their licences (fixtures/data/README.md): the
# tests run from the repository alone. Training and benchmarks read the full sets.
DATA = Path(__file__).resolve().parent / "fixtures" / "data"


def _tsv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8") as fh:
        return [line.rstrip("\n").split("\t") for line in fh][1:]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def korean_sentences(data_dir) -> list[str]:
    rows = _tsv(data_dir / "korsts" / "sts-dev.tsv")
    return [r[5] for r in rows[:300]] + [r[6] for r in rows[:300]]


@pytest.fixture(scope="session")
def kornli(data_dir):
    """{split: [(entailed hypothesis, premise)]} and the premises of each split."""
    out = {}
    for split in ("dev", "test"):
        rows = _tsv(data_dir / "kornli" / f"xnli.{split}.ko.tsv")
        pairs = [(r[1], r[0]) for r in rows if r[2] == "entailment"]
        premises = sorted({r[0] for r in rows})
        out[split] = (pairs, premises)
    return out


@pytest.fixture(scope="session")
def faq_corpus(kornli) -> list[str]:
    """A small Korean corpus: hand-written facts plus KorNLI test premises as distractors."""
    return FAQ + kornli["test"][1][:40]
