"""Connecting to Ray, the optional engine behind ``executor=ray`` (``pip install "wm_eval[ray]"``).

Used by the evaluation's Ray executor and by collection; Ray is imported only here and on demand.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from typing import Any

from wm_eval.errors import WmEvalError

__all__ = ["INSTALL_HINT", "ray_module", "connect", "session", "map_ordered", "get"]

PROBE_SECONDS = 5.0
INSTALL_HINT = 'executor=ray needs Ray, an optional extra: pip install "wm_eval[ray]"'


def ray_module() -> Any:
    """The ``ray`` module, or a one-line :class:`WmEvalError` with the install hint."""
    try:
        import ray
    except ImportError:
        raise WmEvalError(INSTALL_HINT) from None
    return ray


def connect(address: str | None = None) -> bool:
    """Connect this process to Ray unless it already is; returns whether it connected (and so should
    disconnect at the end).

    ``address``: ``"local"`` starts a private Ray on this machine's CPUs; ``None`` uses ``RAY_ADDRESS``,
    else a cluster started here with ``ray start``; anything else is a cluster address
    (``"10.0.0.5:6379"``, ``"ray://head:10001"``).
    """
    ray = ray_module()
    if ray.is_initialized():
        return False
    if address == "local":
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        return True
    target = address or os.environ.get("RAY_ADDRESS") or "auto"
    _probe(target)
    try:
        ray.init(address=target, log_to_driver=False, configure_logging=False)
    except ConnectionError as e:
        raise WmEvalError(f"no Ray cluster at ray_address={target} ({str(e).splitlines()[0]}): start one with "
                          "'ray start --head' or set RAY_ADDRESS, or pass ray_address=local for a private one "
                          "on this machine") from None
    return True


def _probe(target: str) -> None:
    """Fail in seconds, not minutes, when nothing listens at a ``host:port`` address (Ray itself retries
    an unreachable head for minutes)."""
    host, sep, port = target.rpartition(":")
    if target == "auto" or "://" in target or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_SECONDS).close()
    except OSError as e:
        raise WmEvalError(f"no Ray cluster at ray_address={target} ({e.strerror or e}): check the head node's "
                          "address and port (ray start --head prints them), or pass ray_address=local") from None


@contextlib.contextmanager
def session(address: str | None = None) -> Iterator[Any]:
    """Connected to Ray (see :func:`connect`) for the ``with`` block, disconnected after it if this
    block connected; yields the ``ray`` module."""
    connected = connect(address)
    try:
        yield ray_module()
    finally:
        if connected:
            ray_module().shutdown()


def map_ordered(fn: Any, args: list[tuple], *, window: int, on_result: Any, num_cpus: float = 1,
                max_retries: int = 3) -> None:
    """Run ``fn(*a)`` for each ``a`` in ``args`` as Ray tasks, at most ``window`` at a time, and call
    ``on_result(i, result)`` in the order of ``args`` (results that finish early wait for their turn).
    Tasks whose worker or node dies are retried up to ``max_retries`` times; wm_eval's own errors end
    the run as themselves."""
    ray = ray_module()
    task = ray.remote(fn).options(num_cpus=num_cpus, max_retries=max_retries, retry_exceptions=False)
    pending: dict[Any, int] = {}
    ready: dict[int, Any] = {}
    submitted = written = 0
    try:
        while written < len(args):
            while submitted < len(args) and len(pending) + len(ready) < window:
                pending[task.remote(*args[submitted])] = submitted
                submitted += 1
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                ready[pending.pop(ref)] = get(ref)
            while written in ready:
                on_result(written, ready.pop(written))
                written += 1
    finally:
        for ref in pending:
            ray.cancel(ref)


def get(ref: Any) -> Any:
    """``ray.get``, with wm_eval's own errors raised as themselves (one line, no remote traceback)."""
    ray = ray_module()
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, WmEvalError):
            raise e.cause from None
        raise
