"""Environments that stay usable in a process forked after JAX started.

XLA's CPU client runs thread pools; ``os.fork()`` copies the process without those threads, so a
jitted call in the child waits forever. Gymnasium's ``AsyncVectorEnv`` forks its workers by
default (on Linux) after building one environment in the parent, so every worker of a learned
environment would hang.

The environments here detect that case and run themselves out of process instead: an env
class that uses JAX derives from :class:`ForkSafe`; constructed in a process that was forked
after JAX had started, ``cls(**kwargs)`` returns a :class:`RemoteEnv` — a ``gym.Env`` that
starts a fresh interpreter (``fork`` + ``exec``, which is safe), builds ``cls(**kwargs)``
there and forwards ``reset``/``step``/``render``/``close`` and attribute reads to it over a
pipe. Everywhere else (the parent, a spawned worker, a fork taken before JAX started)
construction is direct and nothing changes.
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
from multiprocessing.connection import Connection
from typing import Any

import gymnasium as gym

_forked_after_jax = False


def _jax_started() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge
        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # an unknown jax layout: assume the worst
        return True


def _after_fork_in_child() -> None:
    global _forked_after_jax
    _forked_after_jax = _forked_after_jax or _jax_started()


os.register_at_fork(after_in_child=_after_fork_in_child)


def jax_unusable_here() -> bool:
    """True in a process forked (at any depth) from one in which JAX had started."""
    return _forked_after_jax


class ForkSafe:
    """Mixin for env classes: in a process where JAX cannot run, construction returns a
    :class:`RemoteEnv` of the class instead of an instance. ``_uses_jax(kwargs)`` says whether
    the given constructor arguments need JAX (default: always)."""

    @classmethod
    def _uses_jax(cls, kwargs: dict[str, Any]) -> bool:
        return True

    def __new__(cls, *args, **kwargs):
        if jax_unusable_here() and cls._uses_jax(kwargs):
            return RemoteEnv(cls, *args, **kwargs)
        return super().__new__(cls)


class RemoteError(RuntimeError):
    """The environment's process failed or exited."""


class RemoteEnv(gym.Env):
    """``env_cls(*args, **kwargs)`` running in a fresh Python process, driven through a pipe.

    Spaces, ``metadata``, ``render_mode`` and the class docstring are copied at construction;
    other attribute reads are forwarded (their values must pickle). Exceptions raised by the
    remote env are re-raised here with their type and message.
    """

    def __init__(self, env_cls: type, *args, **kwargs):
        parent_read, child_write = os.pipe()
        child_read, parent_write = os.pipe()
        self._proc = subprocess.Popen(
            [sys.executable, "-c", f"from {__name__} import serve; serve({child_read}, {child_write})"],
            pass_fds=(child_read, child_write))
        os.close(child_read)
        os.close(child_write)
        self._conn_in = Connection(parent_read, writable=False)
        self._conn_out = Connection(parent_write, readable=False)
        self._closed = False
        info = self._call("__init__", f"{env_cls.__module__}:{env_cls.__qualname__}", *args, **kwargs)
        self.action_space, self.observation_space = info["action_space"], info["observation_space"]
        self.metadata, self.render_mode = info["metadata"], info["render_mode"]
        self.remote_class = env_cls
        self.__doc__ = env_cls.__doc__

    def _call(self, method: str, *args, **kwargs):
        if self._closed:
            raise RemoteError("the environment is closed")
        try:
            self._conn_out.send((method, args, kwargs))
            ok, value = self._conn_in.recv()
        except (EOFError, OSError, BrokenPipeError) as err:
            raise RemoteError(f"the environment's process (pid {self._proc.pid}) exited "
                              f"(status {self._proc.poll()})") from err
        if not ok:
            raise value
        return value

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        return self._call("reset", seed=seed, options=options)

    def step(self, action):
        return self._call("step", action)

    def render(self):
        return self._call("render")

    def get_remote_attr(self, name: str):
        """An attribute of the remote environment (its value must pickle)."""
        return self._call("__getattr__", name)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return self.get_remote_attr(name)

    def close(self):
        if getattr(self, "_closed", True):
            return
        try:
            self._call("close")
        except RemoteError:
            pass
        self._closed = True
        self._conn_out.close()
        self._conn_in.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def serve(read_fd: int, write_fd: int) -> None:
    """The remote side: build the env from the first message, then answer calls until ``close``
    or end of input."""
    conn_in, conn_out = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    env = None
    while True:
        try:
            method, args, kwargs = conn_in.recv()
        except EOFError:
            break
        try:
            if method == "__init__":
                module, qualname = args[0].split(":")
                env = getattr(importlib.import_module(module), qualname)(*args[1:], **kwargs)
                value = {"action_space": env.action_space, "observation_space": env.observation_space,
                         "metadata": env.metadata, "render_mode": env.render_mode}
            elif method == "__getattr__":
                value = getattr(env, args[0])
            else:
                value = getattr(env, method)(*args, **kwargs)
            reply = (True, value)
        except Exception as err:  # the caller re-raises it
            reply = (False, err)
        try:
            conn_out.send(reply)
        except Exception as err:  # an unpicklable value or exception
            conn_out.send((False, RemoteError(f"{method}: {type(err).__name__}: {err}")))
        if method == "close":
            break
    if env is not None and method != "close":
        env.close()
