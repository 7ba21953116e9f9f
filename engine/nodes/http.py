"""The `http` node: one HTTP request, refusing private addresses unless the server allows them.

Every hop (the request and, with `follow_redirects`, each redirect) resolves its host once,
checks every address, and connects to a checked address (the URL is pinned to the IP, with the
original Host header and TLS server name), so DNS rebinding cannot slip past the check.
"""
from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from pydantic import Field, model_validator

from engine.errors import NodeError, NodeTimeout, PermanentNodeError
from engine.nodes.base import NodeConfig, NodeContext, NodeType

MAX_REDIRECTS = 10
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
ERROR_BODY_CHARS = 200


class HttpConfig(NodeConfig):
    """Config of an `http` node."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    url: str
    headers: dict[str, str] = {}
    query: dict[str, Any] = {}
    body_type: Literal["none", "json", "form", "raw"] = "none"
    json_body: Any = None
    form: dict[str, Any] = {}
    raw: str | None = None
    timeout_s: float = Field(default=30, gt=0)
    follow_redirects: bool = False

    @model_validator(mode="after")
    def _body_matches_body_type(self) -> HttpConfig:
        given = {"json": self.json_body is not None, "form": bool(self.form), "raw": self.raw is not None}
        field_of = {"json": "json_body", "form": "form", "raw": "raw"}
        for kind, is_given in given.items():
            if is_given and self.body_type != kind:
                raise ValueError(f"{field_of[kind]} is set but body_type is {self.body_type!r}; set body_type to {kind!r}")
        if self.body_type == "raw" and self.raw is None:
            raise ValueError("body_type is 'raw' but raw is not set")
        return self


class HttpNode(NodeType[HttpConfig]):
    """Sends the request; outputs `status_code`, `headers`, `body` and `json` (parsed body or null)."""

    type_name = "http"
    Config = HttpConfig

    @classmethod
    def output_fields(cls, config: NodeConfig, declared: Mapping[str, str] | None) -> frozenset[str] | None:
        """Always `status_code`, `headers`, `body`, `json`."""
        return frozenset({"status_code", "headers", "body", "json"})

    def run(self, ctx: NodeContext, inputs: dict[str, Any]) -> dict[str, Any]:
        """Send the request (following redirects if asked) and describe the response."""
        cfg = self.config
        timeout_s = min(cfg.timeout_s, ctx.remaining_s())
        deadline = time.monotonic() + timeout_s
        url = _parse_url(cfg.url, cfg.query)
        request = _Hop(cfg.method, url, dict(cfg.headers), _body_kwargs(cfg))
        allow_private = ctx.settings.http_allow_private
        # trust_env=False: a proxy from the environment would resolve hosts itself, past our check.
        with httpx.Client(trust_env=False, follow_redirects=False) as client:
            for _ in range(MAX_REDIRECTS + 1):
                reply = _send(client, request, deadline, timeout_s, allow_private)
                location = reply.headers.get("location")
                if not (cfg.follow_redirects and reply.status_code in REDIRECT_STATUSES and location):
                    break
                request = _redirect(request, reply.status_code, location)
            else:
                raise PermanentNodeError(f"http: more than {MAX_REDIRECTS} redirects from {_where(url)}")
        if reply.status_code >= 500 or reply.status_code == 429:
            details: dict[str, Any] = {"status_code": reply.status_code}
            retry_after = reply.headers.get("retry-after", "")
            if retry_after.isdigit():
                details["retry_after_s"] = int(retry_after)
            raise NodeError(
                f"http: {request.method} {_where(request.url)} returned HTTP {reply.status_code}: "
                f"{reply.body[:ERROR_BODY_CHARS]}",
                retryable=True, **details,
            )
        return {"status_code": reply.status_code, "headers": reply.headers, "body": reply.body,
                "json": _parse_json(reply.body)}


@dataclass(frozen=True)
class _Hop:
    method: str
    url: httpx.URL
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass(frozen=True)
class _Reply:
    status_code: int
    headers: dict[str, str]
    body: str


def is_forbidden_address(address: str) -> bool:
    """Whether an IP address is private, loopback, link-local, multicast, reserved or unspecified."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
            or ip.is_reserved or ip.is_unspecified or not ip.is_global)


def resolve_host(host: str, port: int, allow_private: bool) -> list[str]:
    """The host's addresses, refusing the host if any of them is forbidden (unless allowed)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise NodeError(f"http: cannot resolve host {host!r}: {exc}", retryable=True) from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private:
        for address in addresses:
            if is_forbidden_address(address):
                raise PermanentNodeError(
                    f"http: host {host!r} resolves to {address}, a private, loopback, link-local, "
                    "multicast or reserved address; requests to it are refused "
                    "(the server setting http_allow_private allows them)",
                    host=host,
                )
    return addresses


def _parse_url(text: str, query: dict[str, Any]) -> httpx.URL:
    try:
        url = httpx.URL(text)
        if query:
            url = url.copy_merge_params(query)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise PermanentNodeError(f"http: url {text!r} is invalid: {exc}") from exc
    _check_scheme(url)
    return url


def _check_scheme(url: httpx.URL) -> None:
    if url.scheme not in ("http", "https"):
        raise PermanentNodeError(f"http: url scheme must be http or https, got {url.scheme or 'none'!r} in {_where(url)}")
    if not url.host:
        raise PermanentNodeError(f"http: url {str(url)!r} has no host")


def _body_kwargs(cfg: HttpConfig) -> dict[str, Any]:
    if cfg.body_type == "json":
        return {"json": cfg.json_body}
    if cfg.body_type == "form":
        return {"data": cfg.form}
    if cfg.body_type == "raw":
        assert cfg.raw is not None
        return {"content": cfg.raw.encode("utf-8")}
    return {}


def _send(client: httpx.Client, hop: _Hop, deadline: float, timeout_s: float, allow_private: bool) -> _Reply:
    """One request to one hop, pinned to a checked address, read within the deadline."""
    host = hop.url.raw_host.decode("ascii")
    port = hop.url.port or (443 if hop.url.scheme == "https" else 80)
    addresses = resolve_host(host, port, allow_private)
    headers = dict(hop.headers)
    if not any(name.lower() == "host" for name in headers):
        headers["Host"] = hop.url.netloc.decode("ascii")
    if hop.body.get("content") is not None and not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "text/plain; charset=utf-8"
    last_error: httpx.ConnectError | None = None
    for address in addresses:
        left_s = deadline - time.monotonic()
        if left_s <= 0:
            break
        try:
            request = client.build_request(
                hop.method, hop.url.copy_with(host=address), headers=headers, timeout=left_s,
                extensions={"sni_hostname": host}, **hop.body,
            )
            return _read(client, request, deadline)
        except httpx.ConnectError as exc:
            last_error = exc  # try the host's next address
        except httpx.TimeoutException as exc:
            raise NodeTimeout(f"http: {hop.method} {_where(hop.url)} did not finish within {timeout_s:.3g}s") from exc
        except httpx.TransportError as exc:
            raise NodeError(f"http: {hop.method} {_where(hop.url)} failed: {exc or type(exc).__name__}", retryable=True) from exc
        except (TypeError, ValueError, UnicodeError) as exc:
            raise PermanentNodeError(f"http: cannot build the request (check headers, query and body): {exc}") from exc
    if last_error is None:
        raise NodeTimeout(f"http: {hop.method} {_where(hop.url)} did not finish within {timeout_s:.3g}s")
    raise NodeError(f"http: cannot connect to {_where(hop.url)}: {last_error}", retryable=True) from last_error


def _read(client: httpx.Client, request: httpx.Request, deadline: float) -> _Reply:
    response = client.send(request, stream=True)
    try:
        chunks: list[bytes] = []
        size = 0
        # httpx's timeout is per network operation; a slowly dripping body needs our own deadline.
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise PermanentNodeError(f"http: response body exceeds {MAX_RESPONSE_BYTES // (1024 * 1024)} MB")
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout("deadline passed while reading the body", request=request)
            chunks.append(chunk)
    finally:
        response.close()
    encoding = response.charset_encoding or "utf-8"
    content = b"".join(chunks)
    try:
        body = content.decode(encoding, errors="replace")
    except LookupError:
        body = content.decode("utf-8", errors="replace")
    return _Reply(response.status_code, dict(response.headers), body)


def _redirect(hop: _Hop, status_code: int, location: str) -> _Hop:
    """The next hop, with the method and body rules browsers and httpx apply."""
    try:
        url = hop.url.join(location)
    except httpx.InvalidURL as exc:
        raise PermanentNodeError(f"http: redirect to an invalid location {location!r}: {exc}") from exc
    _check_scheme(url)
    method, body, headers = hop.method, hop.body, dict(hop.headers)
    if (status_code == 303 and method != "HEAD") or (status_code in (301, 302) and method == "POST"):
        method, body = "GET", {}
        headers = {k: v for k, v in headers.items() if k.lower() not in ("content-type", "content-length")}
    if (url.scheme, url.host, url.port) != (hop.url.scheme, hop.url.host, hop.url.port):
        # Credentials meant for one origin must not be sent to another.
        headers = {k: v for k, v in headers.items() if k.lower() not in ("authorization", "cookie", "host")}
    return _Hop(method, url, headers, body)


def _where(url: httpx.URL) -> str:
    """The URL without its query string and credentials, which may hold secrets."""
    return str(url.copy_with(query=None, fragment=None, username=None, password=None))


def _parse_json(body: str) -> Any:
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None
