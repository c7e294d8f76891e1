"""The Python client's bearer token against a real `mapsync serve --policy`
on loopback TCP: the right token reads the map its role names and nothing
else, a wrong or missing one is refused UNAUTHENTICATED."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import time

import pytest

import support
from mapsync_client import Client, PermissionDenied, Unauthenticated, Unavailable

TOKEN = "py-token-7c1e"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tokens_right_wrong_and_missing(pins, flows, tmp_path) -> None:
    secret = support.BpfMap(pins.join("secret"), "secret")
    flows.update(support.key(1), support.value(1))
    policy = tmp_path / "policy.toml"
    policy.write_text(
        "[users.py]\n"
        f'tokens_sha256 = ["{hashlib.sha256(TOKEN.encode()).hexdigest()}"]\n'
        'roles = ["read-flows"]\n'
        "[roles.read-flows]\n"
        'read = ["flows"]\n'
    )
    endpoint = f"127.0.0.1:{_free_port()}"
    args = [str(support.mapsync_bin()), "serve", "--listen", endpoint, "--pin-dir", str(pins.join("capture")),
            "--map", flows.arg(), "--map", secret.arg(), "--policy", str(policy)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    try:
        with Client(endpoint, token=f"{TOKEN}\n") as client:
            deadline = time.monotonic() + 20
            while True:
                assert process.poll() is None, f"serve exited with {process.returncode}"
                try:
                    maps = client.list_maps(timeout=1)
                    break
                except Unavailable:
                    assert time.monotonic() < deadline, "serve did not answer within 20 s"
                    time.sleep(0.05)
            assert [m.name for m in maps.maps] == ["flows"], "only the readable map"
            assert client.get("flows", support.key(1)).value == support.value(1)
            with pytest.raises(PermissionDenied, match="may not read map `secret`"):
                client.get("secret", support.key(1))
            with pytest.raises(PermissionDenied, match="may not write"):
                client.put("flows", support.key(2), support.value(2))
            with client.watch(["flows"]) as watch:
                assert next(iter(watch)) is not None, "the watch stream carries the token too"
        with Client(endpoint, token="wrong") as wrong, pytest.raises(Unauthenticated, match="unknown bearer token"):
            wrong.list_maps(timeout=5)
        with Client(endpoint) as missing, pytest.raises(Unauthenticated, match="no credentials"):
            missing.get("flows", support.key(1), timeout=5)
    finally:
        process.kill()
        process.wait()


def test_a_token_must_be_visible_ascii() -> None:
    with pytest.raises(ValueError, match="visible ASCII") as error:
        Client("127.0.0.1:1", token="two words")
    assert "two words" not in str(error.value)
    with pytest.raises(ValueError):
        Client("127.0.0.1:1", token="  ")
