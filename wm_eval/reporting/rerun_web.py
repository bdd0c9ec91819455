"""The Rerun web viewer of paired episodes, bound to one address (``127.0.0.1`` unless asked).

rerun-sdk's in-process web server binds every interface, so the page is served by rerun-sdk's own
``rerun --serve-web --bind <host>`` in a child process, and the recording by a gRPC server in this
process bound to ``host``; :func:`serve_web` returns the exact URL to open.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import subprocess
import tempfile
import time
import urllib.parse
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wm_eval.errors import ConfigError, MissingDependencyError
from wm_eval.reporting.rerun_log import _rerun, _rerun_cli, _stream, log_episodes

__all__ = ["WebViewer", "serve_web"]

@dataclass(eq=False)
class WebViewer:
    """The Rerun web viewer of a recording, as :func:`serve_web` started it; :meth:`close` stops it.

    Attributes:
        url: the page to open: ``web_url`` with ``grpc_url`` percent-encoded as ``?url=``, as Rerun expects.
        web_url: the viewer's HTTP server, e.g. ``http://127.0.0.1:43121``.
        grpc_url: the recording's gRPC server, e.g. ``rerun+http://127.0.0.1:39017/proxy``.
        host: the address both servers are bound to (``127.0.0.1``: this machine only).
        web_port, grpc_port: the two servers' ports.
        stream: the recording stream; it hosts the gRPC server.
        process: the ``rerun`` command-line process that serves the viewer's files.
    """

    url: str
    web_url: str
    grpc_url: str
    host: str
    web_port: int
    grpc_port: int
    stream: Any = field(repr=False)
    process: subprocess.Popen[bytes] = field(repr=False)

    def __post_init__(self) -> None:
        self._stop = weakref.finalize(self, _stop_process, self.process)  # also at interpreter exit

    def close(self) -> None:
        """Stop both servers (idempotent)."""
        self._stop()
        self.stream.disconnect()

    def disconnect(self) -> None:
        """The same as :meth:`close` (``serve_web`` used to return the bare stream)."""
        self.close()

    def __enter__(self) -> WebViewer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def serve_web(source: Any, *, task: str | None = None, obs_scale: np.ndarray | None = None,
              policies: Sequence[str] | None = None, episodes: Sequence[int] | None = None,
              titles: Mapping[str, str] | None = None, web_port: int | None = None, grpc_port: int | None = None,
              open_browser: bool = True, host: str = "127.0.0.1", timeout: float = 30.0) -> WebViewer:
    """Serve the chosen episodes to the Rerun web viewer (other arguments as :func:`write_recording`).

    Both servers, the viewer's HTTP server and the recording's gRPC server, bind to ``host``
    only: ``127.0.0.1`` (the default) keeps the recording on this machine; ``0.0.0.0`` exposes it
    to the network (the gRPC server then also accepts the viewer page from any origin on
    ``web_port``). The gRPC server runs in this process (:class:`rerun.GrpcServerSink`); the
    viewer's files are served by the ``rerun`` command-line tool of rerun-sdk in a child process,
    since rerun-sdk's in-process web server always binds every interface.

    Args:
        web_port, grpc_port: the ports; ``None`` lets the OS pick free ones.
        open_browser: open :attr:`WebViewer.url` in the default browser.
        host: an IP address (``localhost`` means ``127.0.0.1``).
        timeout: seconds to wait for the viewer's server to start.

    Returns:
        A :class:`WebViewer`: its ``url`` is the page to open; the servers run until its
        :meth:`~WebViewer.close` (or the end of the Python process).

    Raises:
        ConfigError: ``host`` is not an IP address, or a server cannot start there (port in use, ...).
        MissingDependencyError: rerun-sdk or its ``rerun`` command-line tool is missing.
    """
    rr, _ = _rerun()
    bind_ip, local_ip = _bind_address(host)
    web_port = _free_port(bind_ip) if web_port is None else int(web_port)
    grpc_port = _free_port(bind_ip) if grpc_port is None else int(grpc_port)
    netloc = f"[{local_ip}]" if ":" in local_ip else local_ip
    web_url, grpc_url = f"http://{netloc}:{web_port}", f"rerun+http://{netloc}:{grpc_port}/proxy"
    stream, layout, chosen, task, obs_scale = _stream(source, task=task, obs_scale=obs_scale, policies=policies,
                                                      episodes=episodes, titles=titles)
    cors = None if ipaddress.ip_address(bind_ip).is_loopback else [f"http://*:{web_port}"]
    stream.set_sinks(rr.GrpcServerSink(bind_ip, grpc_port, cors_allow_origin=cors), default_blueprint=layout)
    try:
        process = _launch_web_server(bind_ip, local_ip, web_port, grpc_url, grpc_port, timeout)
    except BaseException:
        stream.disconnect()
        raise
    viewer = WebViewer(url=f"{web_url}?url={urllib.parse.quote(grpc_url, safe='')}", web_url=web_url,
                       grpc_url=grpc_url, host=bind_ip, web_port=web_port, grpc_port=grpc_port, stream=stream,
                       process=process)
    try:
        log_episodes(stream, chosen, task=task, obs_scale=obs_scale, titles=titles)
        stream.flush()
    except BaseException:
        viewer.close()
        raise
    if open_browser:
        import webbrowser

        webbrowser.open(viewer.url)
    return viewer


def _bind_address(host: str) -> tuple[str, str]:
    """``(address to bind, address this machine's browser uses to reach it)``."""
    try:
        ip = ipaddress.ip_address("127.0.0.1" if host == "localhost" else host)
    except ValueError:
        raise ConfigError(f"host must be an IP address: 127.0.0.1 (this machine only) or 0.0.0.0 (every "
                          f"interface), got '{host}'") from None
    if ip.is_unspecified:
        return str(ip), "127.0.0.1" if ip.version == 4 else "::1"
    return str(ip), str(ip)


def _free_port(ip: str) -> int:
    """A TCP port that is free on ``ip`` now (the OS picks it)."""
    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


def _launch_web_server(bind_ip: str, local_ip: str, web_port: int, grpc_url: str, grpc_port: int,
                       timeout: float) -> subprocess.Popen[bytes]:
    """Run ``rerun --serve-web --bind <ip> --web-viewer-port <port> <grpc_url>`` (the viewer's files only)
    and wait until it and the gRPC server accept connections; a :class:`ConfigError` if they do not."""
    command = [_rerun_cli(), "--serve-web", "--bind", bind_ip, "--web-viewer-port", str(web_port), grpc_url]
    with tempfile.TemporaryFile() as log:  # its output, shown if it fails to start
        try:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        except OSError as exc:
            raise MissingDependencyError(f"cannot run the rerun command-line tool ({exc.strerror or exc}): "
                                         "pip install --force-reinstall 'rerun-sdk>=0.41'") from None
        waiting = {"web viewer": web_port, "gRPC": grpc_port}
        deadline = time.monotonic() + timeout
        while waiting:
            for name, port in list(waiting.items()):
                with contextlib.suppress(OSError):
                    socket.create_connection((local_ip, port), timeout=1.0).close()
                    del waiting[name]
            if waiting and (process.poll() is not None or time.monotonic() > deadline):
                _stop_process(process)
                log.seek(0)
                lines = [line for line in log.read().decode("utf-8", "replace").splitlines() if line.strip()]
                said = f": {' '.join(lines[-1].split())[:300]}" if lines else ""
                raise ConfigError(f"the Rerun {' and '.join(waiting)} server did not start on {bind_ip} port "
                                  f"{', '.join(map(str, waiting.values()))}{said}; choose other ports "
                                  "(web_port=, grpc_port=) or another host")
            if waiting:
                time.sleep(0.05)
    return process


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
