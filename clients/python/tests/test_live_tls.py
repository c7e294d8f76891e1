"""The Python client over TLS against a real `mapsync serve --tls-cert`, with
certificates made by the test (openssl): it lists with the CA, a plain client
gets nowhere, and a client trusting another CA is refused."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

import support
from mapsync_client import Client, Unavailable


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}")
    return cert, key


def _make_server_cert(directory: Path, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    cert, key, csr = directory / "server.pem", directory / "server.key", directory / "server.csr"
    ext = directory / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(csr), "-subj", "/CN=server")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
             "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return cert, key


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_client_lists_over_tls_and_plain_clients_get_nowhere(pins, flows, tmp_path) -> None:
    ca = _make_ca(tmp_path, "ca")
    other = _make_ca(tmp_path, "other")
    cert, key = _make_server_cert(tmp_path, ca)
    endpoint = f"127.0.0.1:{_free_port()}"
    args = [str(support.mapsync_bin()), "serve", "--listen", endpoint, "--pin-dir", str(pins.join("capture")),
            "--map", flows.arg(), "--tls-cert", str(cert), "--tls-key", str(key), "--insecure-listen"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    try:
        with Client(endpoint, tls_ca=str(ca[0])) as client:
            deadline = time.monotonic() + 20
            while True:
                assert process.poll() is None, f"serve exited with {process.returncode}"
                try:
                    maps = client.list_maps(timeout=1)
                    break
                except Unavailable:
                    assert time.monotonic() < deadline, "serve did not answer over TLS within 20 s"
                    time.sleep(0.05)
            assert [m.name for m in maps.maps] == ["flows"]
        with Client(endpoint) as plain, pytest.raises(Unavailable):
            plain.list_maps(timeout=5)
        with Client(endpoint, tls_ca=str(other[0])) as untrusting, pytest.raises(Unavailable):
            untrusting.list_maps(timeout=5)
    finally:
        process.kill()
        process.wait()


def test_tls_options_are_checked() -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        Client("unix:/tmp/x.sock", tls_ca="/nonexistent")
    with pytest.raises(ValueError, match="need tls_ca"):
        Client("127.0.0.1:1", tls_cert="a", tls_key="b")
    with pytest.raises(OSError):
        Client("127.0.0.1:1", tls_ca="/nonexistent/ca.pem")
