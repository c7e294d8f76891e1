"""Helpers for the live tests: the kernel check, bpffs pins written with
bpftool, a `mapsync serve` process, and a TCP proxy that can cut connections.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from mapsync_client import Client, Unavailable

REPO = Path(__file__).resolve().parents[3]
BPFFS = Path("/sys/fs/bpf")


def ci() -> bool:
    """Whether CI is set (then a test that cannot run fails instead of skipping)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def mapsync_bin() -> Path:
    """The `mapsync` binary under test: $MAPSYNC_BIN, else target/debug/mapsync."""
    return Path(os.environ.get("MAPSYNC_BIN", REPO / "target" / "debug" / "mapsync"))


def require_kernel() -> None:
    """Skips (loudly) or, with CI set, fails when live tests cannot run here."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    if not is_bpffs(BPFFS):
        missing.append("bpffs at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)")
    if shutil.which("bpftool") is None:
        missing.append("bpftool (apt-get install bpftool)")
    if not mapsync_bin().is_file():
        missing.append(f"the mapsync binary at {mapsync_bin()} (cargo build --bin mapsync, or set MAPSYNC_BIN)")
    if not missing:
        return
    why = f"live mapsync test cannot run here: needs {', '.join(missing)}"
    if ci():
        pytest.fail(f"{why} (CI is set, so this is a failure)", pytrace=False)
    print(f"\n!!! NOT RUN: {why} !!!\n", file=sys.stderr)
    pytest.skip(f"!!! NOT RUN: {why}")


def is_bpffs(path: Path) -> bool:
    try:
        with open("/proc/mounts") as mounts:
            return any(
                line.split()[1:3] == [str(path), "bpf"] for line in mounts if len(line.split()) >= 3
            )
    except OSError:
        return False


_next_dir = itertools.count()


class PinDir:
    """A fresh directory under /sys/fs/bpf, removed with its pins by
    :meth:`remove`."""

    def __init__(self, label: str) -> None:
        self.path = BPFFS / f"mapsync-pytest-{os.getpid()}-{next(_next_dir)}-{label}"
        self.path.mkdir(parents=True)

    def join(self, name: str) -> Path:
        return self.path / name

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def bpftool(*args: str) -> str:
    """Runs bpftool; returns its stdout, or raises with its stderr."""
    result = subprocess.run(["bpftool", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"bpftool {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _hex(data: bytes) -> List[str]:
    return [f"{b:02x}" for b in data]


class BpfMap:
    """A map created and pinned with bpftool, written and read with bpftool
    (a process that is not mapsync's)."""

    def __init__(
        self, pin: Path, name: str, kind: str = "hash", key_size: int = 4, value_size: int = 8, entries: int = 64
    ) -> None:
        self.pin = pin
        self.name = name
        bpftool(
            "map", "create", str(pin), "type", kind, "key", str(key_size), "value", str(value_size),
            "entries", str(entries), "name", name,
        )  # fmt: skip

    def update(self, key: bytes, value: bytes) -> None:
        bpftool("map", "update", "pinned", str(self.pin), "key", "hex", *_hex(key), "value", "hex", *_hex(value))

    def delete(self, key: bytes) -> None:
        bpftool("map", "delete", "pinned", str(self.pin), "key", "hex", *_hex(key))

    def dump(self) -> Dict[bytes, bytes]:
        """The kernel's content, as `bpftool -j map dump` shows it."""
        entries = json.loads(bpftool("-j", "map", "dump", "pinned", str(self.pin)))
        to_bytes = lambda hexes: bytes(int(h, 16) for h in hexes)  # noqa: E731
        return {to_bytes(e["key"]): to_bytes(e["value"]) for e in entries}

    def arg(self) -> str:
        """`--map NAME=PATH`."""
        return f"{self.name}={self.pin}"


def key(n: int) -> bytes:
    """A 4-byte key, little-endian."""
    return n.to_bytes(4, "little")


def value(n: int) -> bytes:
    """An 8-byte value, little-endian."""
    return n.to_bytes(8, "little")


class Server:
    """A `mapsync serve` on a Unix socket; :meth:`kill` and :meth:`start`
    again to restart it on the same socket and pins."""

    def __init__(self, pins: PinDir, socket_dir: Path, maps: List[BpfMap], extra: Optional[List[str]] = None) -> None:
        self.pins = pins
        self.socket = socket_dir / "mapsync.sock"
        self.endpoint = f"unix:{self.socket}"
        self.args = [str(mapsync_bin()), "serve", "--listen", self.endpoint, "--pin-dir", str(pins.join("capture"))]
        for m in maps:
            self.args += ["--map", m.arg()]
        self.args += extra or []
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> "Server":
        """Starts serve and waits until it answers (at most 20 s)."""
        self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=None)
        deadline = time.monotonic() + 20
        with Client(self.endpoint) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"mapsync serve exited early with {self.process.returncode}")
                try:
                    client.list_maps(timeout=1)
                    return self
                except Unavailable:
                    time.sleep(0.05)
        raise RuntimeError("mapsync serve did not answer within 20 s")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stops serve with `sig` (SIGKILL: no goodbye to the clients; SIGTERM:
        a graceful shutdown that ends streams with UNAVAILABLE) and waits."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
                raise
        self.process = None


class Proxy:
    """A TCP proxy on 127.0.0.1 to a Unix socket. :meth:`cut` closes every
    connection (the client sees a broken transport while the server keeps its
    epoch); while :attr:`refusing`, new connections are closed at once."""

    def __init__(self, unix_path: Path) -> None:
        self.unix_path = str(unix_path)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.endpoint = f"127.0.0.1:{self.port}"
        self.refusing = False
        self.accepted = 0
        self._sockets: List[socket.socket] = []
        self._lock = threading.Lock()
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                downstream.close()
                continue
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.unix_path)
            except OSError:
                downstream.close()
                continue
            with self._lock:
                self.accepted += 1
                self._sockets += [downstream, upstream]
            for a, b in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        """Closes every open connection."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def stop(self) -> None:
        self._stopped = True
        self.cut()
        self.listener.close()
