"""``python -m <module> ...`` in a new process that starts with MONAI already imported.

Every ``python -m monai.bundle run`` pays ``import monai`` first (about 10 s on 2 CPU cores: it imports torch,
ignite, mlflow, torchvision and scipy eagerly), and the bundle tests start dozens of such runs. Here one
``multiprocessing`` fork server imports those modules once; each run is a fork of it, so it is still a process of
its own (own session and process group, own exit status, killable, output to its own file) but starts in
milliseconds. What a fork cannot reproduce stays with a new interpreter (the caller's choice, see ``conftest.py``):
an environment of the run's own, which libraries read when they load (``OMP_NUM_THREADS``), and launchers such as
``torchrun``.

Set ``CXR_MONAI_TEST_FRESH_PROCESSES=1`` to start every run in a new interpreter instead.

This module is imported by the fork server and by every run, so it imports nothing of the project or of pytest.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import runpy
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

# what `monai.bundle` and the bundles' configs import anyway; a module missing here only makes its runs slower
PRELOAD = ["torch", "ignite", "mlflow", "monai", "monai.bundle", "monai.bundle.scripts", "monai.handlers"]


def enabled() -> bool:
    return os.environ.get("CXR_MONAI_TEST_FRESH_PROCESSES", "") in ("", "0")


def _exit_status(code: object) -> int:
    """The status ``sys.exit(code)`` gives an interpreter: None is 0, an int is itself, anything else is printed
    and 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _run_module(module: str, args: Sequence[str], cwd: str, environ: Mapping[str, str], stdout: str,
                stderr: str) -> None:
    """In the forked process: what ``cd cwd && python -m module args > stdout 2> stderr`` does (a new session, as
    ``subprocess.Popen(start_new_session=True)``), then exit with its status, at-exit handlers included."""
    os.setsid()
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(environ)
    for fd, path in ((1, stdout), (2, stderr)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(target, fd)
        os.close(target)
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
    sys.argv = [module, *args]
    sys.path.insert(0, cwd)  # as `python -m` puts the working directory first
    status = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        status = _exit_status(stop.code)
    except BaseException:  # as the interpreter reports an uncaught exception: through sys.excepthook
        sys.excepthook(*sys.exc_info())
        status = 1
    try:
        atexit._run_exitfuncs()  # a fork child leaves through os._exit, which skips them (MLflow ends its run here)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - the status matters more than a closed stream
                pass
        os._exit(status)


class WarmProcess:
    """A started run: ``pid``, ``poll()``, ``wait(timeout)`` and ``returncode`` as in :class:`subprocess.Popen`."""

    def __init__(self, process: multiprocessing.process.BaseProcess):
        self._process = process
        self.pid = process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        import subprocess

        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(self._process.name, timeout)
        return self._process.exitcode


_CONTEXT: multiprocessing.context.BaseContext | None = None


def _context() -> multiprocessing.context.BaseContext:
    """The ``forkserver`` context, its server (one per pytest process, started on first use) preloading ``PRELOAD``."""
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload([__name__, *PRELOAD])
    return _CONTEXT


def start(module: str, args: Sequence[str], cwd: Path, stdout: Path, stderr: Path | None = None) -> WarmProcess:
    """Start ``python -m module *args`` in ``cwd`` as a fork of the warm server with this process's environment as
    it is now, output appended to ``stdout`` (and ``stderr``, or the same file)."""
    process = _context().Process(target=_run_module, name=f"python -m {module}",
                                 args=(module, [str(arg) for arg in args], str(cwd), dict(os.environ), str(stdout),
                                       str(stderr or stdout)))
    process.start()
    return WarmProcess(process)


def spawn(function, args: tuple = (), nprocs: int = 2) -> None:
    """``torch.multiprocessing.spawn(function, args, nprocs)`` with processes forked from the warm server rather than
    new interpreters (``spawn``; ``fork`` of a process that has run OpenMP work is unsafe). ``function`` must be
    importable by name, as for ``spawn``."""
    import torch.multiprocessing

    if not enabled():
        torch.multiprocessing.spawn(function, args=args, nprocs=nprocs)
        return
    _context()  # the server preloads PRELOAD only if it is configured before its first start
    torch.multiprocessing.start_processes(function, args=args, nprocs=nprocs, start_method="forkserver")
