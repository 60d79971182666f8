"""Egress proxy: the only way out of a container sandbox that was granted network.

A sandbox's network namespace has nothing but loopback. When a sandbox is granted
network, each of its processes gets a listening socket *created inside its network
namespace* at ``127.0.0.1:3128`` (the host enters the namespace with ``setns`` on
one dedicated thread, binds, and leaves), served by this host-side HTTP proxy, and
``HTTP(S)_PROXY`` pointing at it. There is no other route: no veth, no DNS.

For every request the proxy applies the sandbox's ``EgressPolicy``:

1. the host name must match the allowlist and no deny pattern (deny wins);
2. the proxy resolves the name itself and refuses addresses that are not public
   (``addresses.is_public``: loopback, private, link-local, CGNAT, multicast,
   reserved, and IPv6 forms that embed such an IPv4 address) unless the operator
   lists them (``sandbox.egress_allow_private``) and the policy's ``allow_private``
   names them too; it then connects to the vetted address, so a DNS answer cannot
   change between check and connect;
3. the ``EgressHook``s run (``hooks``) and may refuse the request or, for plain
   HTTP, change its headers. This is where the identity room will inject
   credentials and sign requests (RFC 9421); HTTPS (``CONNECT``) is a tunnel, so
   a hook sees only host and port there until TLS is terminated at the proxy.

Every decision is recorded in ``EgressProxy.events`` (bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fnmatch
import ipaddress
import os
import socket
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Mapping

from myriad.errors import InvalidRequest, PermissionDenied, SandboxUnavailable
from myriad.sandbox.addresses import is_public, unwrap

PROXY_PORT = 3128
MAX_CONNECTIONS = 256
"""Concurrent proxied connections per sandboxed process (each costs the host two descriptors)."""
_CLONE_NEWNET = 0x40000000
_MAX_HEAD = 64 * 1024


@dataclass
class EgressPolicy:
    """Which hosts a sandbox may reach.

    ``allow``: host patterns (``example.com`` exactly, ``*.example.com`` any
    subdomain, ``*`` any public host), optionally with a port (``example.com:443``
    allows that port only; without one, any port). ``deny``: the same syntax, and
    it wins.
    ``allow_private``: addresses, networks (``10.0.0.0/8``) or host names that
    may resolve to non-public addresses (e.g. ``127.0.0.1`` for a test server); it
    only relaxes the address check, the host must still be allowed, and every entry
    must be covered by the operator's ``sandbox.egress_allow_private`` (checked when
    the sandbox opens, and again by the proxy).
    """

    allow: list[str] = field(default_factory=list)
    deny: list[str] = field(default_factory=list)
    allow_private: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: Any) -> "EgressPolicy | None":
        """``None``/``False`` is no network; ``True`` is any public host; else an object."""
        if data is None or data is False:
            return None
        if data is True:
            return cls(allow=["*"])
        if not isinstance(data, Mapping):
            raise InvalidRequest("network must be false, true or an object {allow, deny, allow_private}")
        unknown = set(data) - {"allow", "deny", "allow_private"}
        if unknown:
            raise InvalidRequest(f"unknown network field(s): {', '.join(sorted(unknown))}")
        lists = {}
        for key in ("allow", "deny", "allow_private"):
            value = data.get(key) or []
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise InvalidRequest(f"network.{key} must be a list of non-empty strings")
            lists[key] = [v.strip().lower().rstrip(".") for v in value]
        for entry in lists["allow_private"]:
            if "/" in entry:
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise InvalidRequest(f"network.allow_private: {entry!r} is not a network") from None
        return cls(**lists)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def check_host(self, host: str, port: int | None = None) -> str | None:
        """``None`` if the name (and port) may be contacted, else why not."""
        host = host.lower().rstrip(".")
        for pattern in self.deny:
            if _match(pattern, host, port):
                return f"{host} is denied by {pattern!r}"
        if any(_match(p, host, port) for p in self.allow):
            return None
        where = f"{host}:{port}" if port is not None and any(_match(p, host, None) for p in self.allow) else host
        return f"{where} is not in this sandbox's allowlist"

    def check_address(self, host: str, address: str, operator: Iterable[str] | None = None) -> str | None:
        """``None`` if ``address`` (what ``host`` resolved to) may be contacted, else why not.

        A non-public address passes only if this policy's ``allow_private`` covers it
        and, when ``operator`` is given, the operator's list does too."""
        ip = unwrap(address)
        if is_public(ip):
            return None
        if _covered(self.allow_private, host, ip) and (operator is None or _covered(operator, host, ip)):
            return None
        return f"{host} resolves to {ip}, a non-public address (only the operator can permit it: sandbox.egress_allow_private)"

    def private_outside(self, operator: Iterable[str]) -> list[str]:
        """The ``allow_private`` entries the operator's list does not cover (must be empty)."""
        ops = [o.strip().lower().rstrip(".") for o in operator]
        nets = []
        for o in ops:
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.ip_network(o, strict=False))
        out = []
        for entry in self.allow_private:
            if entry in ops:
                continue
            try:
                net = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                out.append(entry)  # a host name: only an identical operator entry covers it
                continue
            if not any(net.version == n.version and net.subnet_of(n) for n in nets):  # type: ignore[arg-type]
                out.append(entry)
        return out


def _covered(entries: Iterable[str], host: str, ip: Any) -> bool:
    for entry in entries:
        if entry == host.lower() or entry == str(ip):
            return True
        if "/" in entry:
            with contextlib.suppress(ValueError):
                net = ipaddress.ip_network(entry, strict=False)
                if ip.version == net.version and ip in net:
                    return True
    return False


def _match(pattern: str, host: str, port: int | None = None) -> bool:
    name, sep, port_s = pattern.rpartition(":")
    if sep and port_s.isdigit() and "]" not in port_s:
        if port is not None and int(port_s) != port:
            return False
        pattern = name
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and fnmatch.fnmatchcase(host, pattern)
    return host == pattern


@dataclass
class EgressRequest:
    """One outbound request as a hook sees it. Hooks may edit ``headers`` (plain HTTP only)."""

    sandbox_id: str
    owner: str
    method: str
    host: str
    port: int
    scheme: str  # "http" (forwarded, headers visible) or "https" (CONNECT tunnel)
    path: str
    headers: list[tuple[str, str]]


EgressHook = Callable[[EgressRequest], Awaitable[None]]
"""Runs before the proxy connects; raise ``PermissionDenied`` to refuse."""


@dataclass
class EgressEvent:
    sandbox_id: str
    host: str
    port: int
    method: str
    allowed: bool
    reason: str
    at: float


class EgressProxy:
    """The host-side proxy shared by all sandboxes of a host."""

    def __init__(self, hooks: Iterable[EgressHook] = (), connect_timeout: float = 10.0, max_events: int = 10_000,
                 allow_private: Iterable[str] = ()) -> None:
        self.hooks = list(hooks)
        self.allow_private = [a.strip().lower().rstrip(".") for a in allow_private]
        """The operator's non-public destinations; a sandbox's policy can narrow, never widen them."""
        self.connect_timeout = connect_timeout
        self.events: deque[EgressEvent] = deque(maxlen=max_events)
        self._executor: ThreadPoolExecutor | None = None

    def add_hook(self, hook: EgressHook) -> None:
        """Install a hook (e.g. the identity room's credential injector)."""
        self.hooks.append(hook)

    # -- attaching to a sandboxed process ----------------------------------------------

    async def attach(self, pid: int, policy: EgressPolicy, *, sandbox_id: str, owner: str) -> "Attachment":
        """Listen on 127.0.0.1:3128 inside the network namespace of host process ``pid``."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="myriad-netns")
        loop = asyncio.get_running_loop()
        sock = await loop.run_in_executor(self._executor, self._listen_in_netns, pid)
        attachment = Attachment()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            if len(attachment.tasks) >= MAX_CONNECTIONS:
                self._record(sandbox_id, "", 0, "", False, f"more than {MAX_CONNECTIONS} concurrent connections")
                await _reply(writer, 429, f"more than {MAX_CONNECTIONS} concurrent connections from this process")
                writer.close()
                return
            attachment.tasks.add(task)
            try:
                await self._serve(reader, writer, policy, sandbox_id, owner)
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                pass
            finally:
                attachment.tasks.discard(task)
                writer.close()

        attachment.server = await asyncio.start_server(handle, sock=sock, limit=_MAX_HEAD)
        return attachment

    def _listen_in_netns(self, pid: int) -> socket.socket:
        libc = ctypes.CDLL(None, use_errno=True)
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            os.close(own)
            raise SandboxUnavailable(f"cannot open the sandbox's network namespace: {e}") from None
        try:
            if libc.setns(target, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise SandboxUnavailable(
                    f"cannot enter the sandbox's network namespace ({os.strerror(err)}); "
                    "sandbox network egress needs Myriad to run as root"
                )
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", PROXY_PORT))
                sock.listen(128)
                sock.setblocking(False)
                return sock
            finally:
                if libc.setns(own, _CLONE_NEWNET) != 0:
                    # Never let a host thread stay inside a sandbox's namespace: retire it.
                    self._executor = None
                    raise SandboxUnavailable("could not leave a sandbox network namespace; egress thread retired")
        finally:
            os.close(target)
            os.close(own)

    # -- the proxy itself ----------------------------------------------------------------

    def _record(self, sandbox_id: str, host: str, port: int, method: str, allowed: bool, reason: str) -> None:
        self.events.append(EgressEvent(sandbox_id, host, port, method, allowed, reason, time.time()))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     policy: EgressPolicy, sandbox_id: str, owner: str) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            return await _reply(writer, 400, "malformed request line")
        headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:] if ":" in line]
        if method.upper() == "CONNECT":
            host, port = _split_hostport(target, 443)
            scheme, path = "https", ""
        elif target.startswith("http://"):
            rest = target[len("http://"):]
            hostport, _, path = rest.partition("/")
            host, port = _split_hostport(hostport, 80)
            scheme, path = "http", "/" + path
        else:
            return await _reply(writer, 400, "this is a proxy: send CONNECT host:port or an absolute http:// URL")
        if not host or port is None:
            return await _reply(writer, 400, f"bad target {target!r}")
        why = policy.check_host(host, port)
        if why is None:
            address, why = await self._resolve(policy, host, port)
        if why is not None:
            self._record(sandbox_id, host, port, method, False, why)
            return await _reply(writer, 403, why)
        request = EgressRequest(sandbox_id, owner, method, host, port, scheme, path, [(k, v) for k, v in headers])
        try:
            for hook in self.hooks:
                await hook(request)
        except PermissionDenied as e:
            self._record(sandbox_id, host, port, method, False, e.message)
            return await _reply(writer, 403, e.message)
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(address, port), self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as e:
            self._record(sandbox_id, host, port, method, False, f"connect failed: {e}")
            return await _reply(writer, 502, f"cannot connect to {host}:{port}: {e}")
        self._record(sandbox_id, host, port, method, True, "allowed")
        try:
            if scheme == "https":
                writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                await writer.drain()
            else:
                # Host is the URI's host (the one policy, hooks and credentials were chosen
                # for), never what the client put in its own Host header.
                out = [f"{method} {path} {version}", f"Host: {_host_header(host, port)}"]
                for k, v in request.headers:
                    if k.lower() in ("host", "proxy-connection", "proxy-authorization", "connection", "keep-alive"):
                        continue
                    out.append(f"{k}: {v}")
                out.append("Connection: close")
                up_writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
            await _pipe_both(reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()

    async def _resolve(self, policy: EgressPolicy, host: str, port: int) -> tuple[str, str | None]:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            return "", f"cannot resolve {host}: {e.strerror}"
        if not infos:
            return "", f"cannot resolve {host}"
        # Every address must pass: a name with one public and one private answer is refused.
        for info in infos:
            why = policy.check_address(host, str(info[4][0]), self.allow_private)
            if why is not None:
                return "", why
        return str(infos[0][4][0]), None

    async def aclose(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None


class Attachment:
    """The proxy's listener inside one process's network namespace."""

    def __init__(self) -> None:
        self.server: asyncio.base_events.Server | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()


def _host_header(host: str, port: int) -> str:
    name = f"[{host}]" if ":" in host else host
    return name if port == 80 else f"{name}:{port}"


def _split_hostport(value: str, default: int) -> tuple[str, int | None]:
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port_s = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        host, _, port_s = value.partition(":")
    else:
        host, port_s = value, ""
    try:
        port = int(port_s) if port_s else default
    except ValueError:
        return host, None
    return host.lower(), port if 0 < port < 65536 else None


async def _reply(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    reasons = {400: "Bad Request", 403: "Forbidden", 429: "Too Many Requests", 502: "Bad Gateway"}
    body = f"myriad egress: {message}\n".encode()
    writer.write(
        f"HTTP/1.1 {status} {reasons.get(status, 'Error')}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
    )
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def _pipe_both(r1: asyncio.StreamReader, w1: asyncio.StreamWriter,
                     r2: asyncio.StreamReader, w2: asyncio.StreamWriter) -> None:
    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while chunk := await src.read(65536):
                dst.write(chunk)
                await dst.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                if dst.can_write_eof():
                    dst.write_eof()

    a = asyncio.ensure_future(pipe(r1, w2))
    b = asyncio.ensure_future(pipe(r2, w1))
    try:
        await asyncio.gather(a, b)
    finally:
        a.cancel()
        b.cancel()


def proxy_env() -> dict[str, str]:
    """Environment variables that point a sandboxed process at the proxy."""
    url = f"http://127.0.0.1:{PROXY_PORT}"
    return {"HTTP_PROXY": url, "HTTPS_PROXY": url, "http_proxy": url, "https_proxy": url,
            "ALL_PROXY": url, "NO_PROXY": "", "no_proxy": ""}


__all__ = ["EgressPolicy", "EgressProxy", "EgressRequest", "EgressHook", "EgressEvent", "Attachment", "proxy_env", "PROXY_PORT"]
