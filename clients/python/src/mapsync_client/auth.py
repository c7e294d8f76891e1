"""Bearer tokens: an interceptor adding ``authorization: Bearer TOKEN`` to
every call (unary and streaming) of a channel. The token never appears in a
``repr`` or an error message."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Sequence, Tuple

import grpc


class _Details(NamedTuple):
    method: str
    timeout: Optional[float]
    metadata: Optional[Sequence[Tuple[str, str]]]
    credentials: Optional[grpc.CallCredentials]
    wait_for_ready: Optional[bool]
    compression: Optional[grpc.Compression]


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the token to the metadata of every call.

    Raises:
        ValueError: the token is empty or holds anything but visible ASCII
            (it could not be sent as metadata); the message does not show it.
    """

    def __init__(self, token: str) -> None:
        token = token.strip()
        if not token or not all(0x21 <= ord(c) <= 0x7E for c in token):
            raise ValueError("the bearer token is empty or holds characters other than visible ASCII")
        self._value = f"Bearer {token}"

    def __repr__(self) -> str:
        return "BearerToken(..)"

    def _details(self, details: Any) -> _Details:
        metadata = [(k, v) for k, v in (details.metadata or ()) if k != "authorization"]
        metadata.append(("authorization", self._value))
        return _Details(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)
