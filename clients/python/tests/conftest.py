"""Fixtures of the live tests (see support.py): a bpffs pin directory with
maps, and `mapsync serve` on them, cleaned up after each test."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

import support


@pytest.fixture
def pins(request) -> Iterator[support.PinDir]:
    """A fresh bpffs directory (skips or, with CI set, fails without a kernel)."""
    support.require_kernel()
    pins = support.PinDir(request.node.name[:40])
    yield pins
    pins.remove()


@pytest.fixture
def flows(pins) -> support.BpfMap:
    """A hash map: 4-byte keys, 8-byte values, 64 entries, named `flows`."""
    return support.BpfMap(pins.join("flows"), "flows")


@pytest.fixture
def serve(pins) -> Iterator[Callable[..., support.Server]]:
    """Starts `mapsync serve --map NAME=PATH...` (extra args allowed); every
    server started is killed at the end."""
    servers: List[support.Server] = []
    socket_dir = tempfile.TemporaryDirectory(prefix="mapsync-pytest-")

    def start(maps: List[support.BpfMap], extra: Optional[List[str]] = None) -> support.Server:
        server = support.Server(pins, Path(socket_dir.name), maps, extra)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.kill()
    socket_dir.cleanup()
