"""Run the ``keycld`` command under tcmalloc, which keeps freed memory for the next training step.

XLA's CPU runtime allocates the temporaries of every jitted call afresh (about 390 MB for one
training step of the cpu preset, 50 frames at h = 16) from its worker threads. glibc's malloc
serves blocks that large with ``mmap`` and unmaps them when they are freed, so each step faults
in about 100,000 fresh 4 KiB pages, which the kernel zeroes: about 0.2 CPU-seconds of system
time per step. tcmalloc keeps the freed pages mapped and hands them out again, and the step no
longer faults (``benchmarks/train_step.py`` measures steps under both allocators).

An allocator can only be swapped before the process starts, so the command line re-executes
itself once with tcmalloc in ``LD_PRELOAD`` (:func:`reexec_under_tcmalloc`). The environment
variable ``KEYCLD_ALLOCATOR`` chooses:

* ``auto`` (default): tcmalloc when the system has it (Debian/Ubuntu: ``libtcmalloc-minimal4``,
  which ``make setup`` installs), else glibc's malloc, unchanged;
* ``tcmalloc``: require it (the command exits with status 2 when it is missing);
* ``system``: never re-execute.

Library use (``import keycld`` in a notebook) is not affected: set ``LD_PRELOAD`` yourself there,
e.g. ``LD_PRELOAD=libtcmalloc_minimal.so.4 jupyter lab``.
"""
from __future__ import annotations

import ctypes.util
import os
import sys
from collections.abc import Callable, Mapping

ALLOCATOR_VAR = "KEYCLD_ALLOCATOR"
ALLOCATORS = ("auto", "tcmalloc", "system")
REEXEC_VAR = "KEYCLD_ALLOCATOR_REEXEC"  # set in the re-executed process: never re-execute twice
# gperftools reports every allocation above this many bytes on stderr (default 1 GiB, which the
# paper configuration's temporaries can exceed)
_REPORT_VAR = "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"
_LIBRARIES = ("tcmalloc_minimal", "tcmalloc")


def find_tcmalloc() -> str | None:
    """The soname of an installed tcmalloc (e.g. ``"libtcmalloc_minimal.so.4"``), or None."""
    for name in _LIBRARIES:
        found = ctypes.util.find_library(name)
        if found:
            return found
    return None


def tcmalloc_loaded() -> bool:
    """True when tcmalloc is mapped into this process (Linux: from ``/proc/self/maps``)."""
    try:
        with open("/proc/self/maps") as f:
            return any("libtcmalloc" in line for line in f)
    except OSError:
        return False


def allocator_choice(environ: Mapping[str, str]) -> str:
    """``KEYCLD_ALLOCATOR`` from ``environ`` ("auto" when unset); ValueError naming a bad value."""
    choice = environ.get(ALLOCATOR_VAR, "auto")
    if choice not in ALLOCATORS:
        raise ValueError(f"{ALLOCATOR_VAR}={choice!r} is not an allocator; allowed: {', '.join(ALLOCATORS)}")
    return choice


def tcmalloc_environment(environ: Mapping[str, str],
                         find_library: Callable[[], str | None] = find_tcmalloc) -> dict[str, str] | None:
    """The environment to re-execute with: ``environ`` with the library ``find_library()`` names
    first in ``LD_PRELOAD``; None when nothing is to change (``KEYCLD_ALLOCATOR=system``, already
    re-executed or preloaded, or ``auto`` with no library; the library is looked up only when
    needed). ValueError for a bad ``KEYCLD_ALLOCATOR`` and for ``tcmalloc`` with no library."""
    choice = allocator_choice(environ)
    if choice == "system" or environ.get(REEXEC_VAR) == "1" or "tcmalloc" in environ.get("LD_PRELOAD", ""):
        return None
    library = find_library()
    if library is None:
        if choice == "tcmalloc":
            raise ValueError(f"{ALLOCATOR_VAR}=tcmalloc, but no tcmalloc library is installed (Debian/Ubuntu: "
                             f"apt-get install libtcmalloc-minimal4); or set {ALLOCATOR_VAR}=auto or system")
        return None
    env = dict(environ)
    env["LD_PRELOAD"] = " ".join(p for p in (library, environ.get("LD_PRELOAD", "")) if p)
    env[REEXEC_VAR] = "1"
    env.setdefault(_REPORT_VAR, str(1 << 40))
    return env


def reexec_under_tcmalloc() -> None:
    """Replace this process by the same command under tcmalloc when :func:`tcmalloc_environment`
    asks for it; return otherwise. Call it first thing in a command's ``main`` (before jax
    allocates), only for a process started from the command line (it re-runs ``sys.orig_argv``).
    ValueError as :func:`tcmalloc_environment`."""
    if not sys.platform.startswith("linux"):
        return
    env = tcmalloc_environment(os.environ)
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
