"""Other machines for inference: llama.cpp's RPC backend, as a server here and as devices of the engine.

``hearth rpc-worker`` runs :func:`serve`: llama.cpp's own RPC server (``ggml_backend_rpc_start_server``,
reached through the RPC registry's proc address as tools/rpc/rpc-server.cpp does), serving this
machine's best device. The engine adds a worker with ``ggml_backend_rpc_add_server`` (the same
registry), and its devices hold some of the model's layers (core.engine.ops.rpc_split).

Two properties of ggml's RPC client shape this module (ggml/src/ggml-rpc/ggml-rpc.cpp):
- it ABORTS the process when a server does not answer or answers wrongly (``RPC_STATUS_ASSERT``,
  ``rpc_dispatcher::start``), so :func:`probe` talks to a worker from a child process, after a plain
  TCP connect has said that something listens;
- a server serves ONE client at a time (``ggml_backend_rpc_start_server`` accepts, serves, then accepts
  the next), so a worker holding a model for one engine makes every other client wait: a probe then
  times out and says the worker is busy.
The protocol has no authentication or encryption: a worker binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from core.engine.backends import DevProps
from core.errors import WorkerError

DEFAULT_PORT = 50052
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
BUSY = "busy: serving a model (loaded by another Hearth or this one)"
WARNING = (
    "Warning: llama.cpp's RPC has no authentication or encryption: anyone who can reach {endpoint} can use "
    "this machine's memory and compute; use an SSH tunnel (ssh -L {port}:127.0.0.1:{port} host) or a trusted "
    "network."
)
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252})$")
# enum ggml_backend_dev_type (ggml/include/ggml-backend.h)
_CPU, _GPU, _IGPU = 0, 1, 2


# -- endpoints -------------------------------------------------------------------------------------
def parse_endpoint(text: str) -> str:
    """``host[:port]`` -> ``host:port`` (the default port when none is given; IPv6 in brackets)."""
    raw = text.strip()
    if raw.endswith(":") and not raw.endswith("::"):
        raise WorkerError(f"'{text}' is not a worker address: the port must be a number from 1 to 65535.")
    if not raw or any(c.isspace() for c in raw) or "/" in raw:
        raise WorkerError(f"'{text}' is not a worker address: give it as HOST or HOST:PORT, e.g. 192.168.1.20:50052.")
    if raw.startswith("["):
        end = raw.find("]")
        host, rest = (raw[1:end], raw[end + 1 :]) if end > 0 else ("", "")
        if end < 0 or (rest and not rest.startswith(":")):
            raise WorkerError(f"'{text}' is not a worker address: write an IPv6 one as [ADDRESS]:PORT.")
        port_text = rest[1:] if rest else ""
    elif raw.count(":") > 1:  # a bare IPv6 address: no port
        host, port_text = raw, ""
    elif ":" in raw:
        host, port_text = raw.rsplit(":", 1)
    else:
        host, port_text = raw, ""
    try:
        is_v6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        is_v6 = False
        if not _NAME.match(host):
            raise WorkerError(
                f"'{text}' is not a worker address: '{host}' is not a machine name or IP address.") from None
    if port_text == "":
        port = DEFAULT_PORT
    elif port_text.isdigit() and 1 <= int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise WorkerError(f"'{text}' is not a worker address: the port must be a number from 1 to 65535.")
    return f"[{host}]:{port}" if is_v6 else f"{host}:{port}"


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` (as :func:`parse_endpoint` writes it) -> (host without brackets, port)."""
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), int(port)


def _ipv4_only(endpoint: str) -> str:
    """'' when ggml can reach ``endpoint``; else why not (its transport is IPv4 only: transport.cpp)."""
    host, _port = split_endpoint(endpoint)
    if ":" in host:
        return (f"llama.cpp's RPC connects over IPv4 only, so {endpoint} cannot be used: give the machine's IPv4 "
                "address or name")
    return ""


def tcp_check(endpoint: str, timeout: float = 2.0) -> str:
    """'' when something accepts a TCP connection at ``endpoint``; else one sentence saying why not.

    A plain connect: it tells a stopped or unreachable worker from a listening one without speaking RPC
    (a listening worker busy with another client still completes the handshake from its backlog).
    """
    host, port = split_endpoint(endpoint)
    reason = _ipv4_only(endpoint)
    if reason:
        return reason
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror:
        return f"{host} is not a known machine name: check the spelling or use its IP address"
    last = ""
    for family, kind, proto, _name, address in infos[:2]:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(timeout)
                sock.connect(address)
                return ""
        except ConnectionRefusedError:
            last = f"nothing listens on {endpoint}: start `hearth rpc-worker --port {port}` on that machine"
        except TimeoutError:
            last = (f"{endpoint} does not answer: the machine may be off, or a firewall blocks port {port}, or the "
                    "worker is busy")
        except OSError as exc:
            last = f"{endpoint} cannot be reached ({exc.strerror or exc})"
    return last


# -- what a worker reports -------------------------------------------------------------------------
@dataclass
class WorkerDevice:
    """One device of a worker as llama.cpp's RPC reports it."""

    name: str  # ggml's name for it on the client, e.g. "RPC0"
    description: str  # what RPC says about it (the endpoint: the protocol carries no device names)
    free_bytes: int
    total_bytes: int


@dataclass
class WorkerInfo:
    """A worker's answer to :func:`probe`: its devices and memory, or why it cannot be used."""

    endpoint: str
    ok: bool
    devices: list[WorkerDevice] = field(default_factory=list)
    error: str = ""  # one sentence when not ok

    @property
    def free_bytes(self) -> int:
        return sum(d.free_bytes for d in self.devices)

    @property
    def total_bytes(self) -> int:
        return sum(d.total_bytes for d in self.devices)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["free_bytes"], data["total_bytes"] = self.free_bytes, self.total_bytes
        return data


def probe(endpoint: str, timeout: float = 5.0) -> WorkerInfo:
    """Ask a worker for its devices and memory; never raises for a worker that cannot be used.

    ggml's RPC client runs in a child process (``python -m core.engine.rpc probe ENDPOINT``): it aborts
    its process when the server goes away. ``timeout``: how long the worker may take to answer.
    """
    try:
        endpoint = parse_endpoint(endpoint)
    except WorkerError as exc:
        return WorkerInfo(endpoint, False, [], str(exc))
    reason = tcp_check(endpoint, min(timeout, 3.0))
    if reason:
        return WorkerInfo(endpoint, False, [], _sentence(reason))
    from core.runtime import module_command

    command = module_command("core.engine.rpc", "probe", endpoint, "--timeout", str(timeout))
    try:
        # The child's own clock covers the answer; this one covers starting Python and llama.cpp too.
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout + 180, check=False,
                              env={**os.environ, "GGML_NO_BACKTRACE": "1"})
    except (OSError, subprocess.SubprocessError) as exc:
        return WorkerInfo(endpoint, False, [], f"The worker {endpoint} could not be asked: {exc}.")
    lines = done.stdout.strip().splitlines()
    try:
        data = json.loads(lines[-1]) if lines else {}
    except ValueError:
        data = {}
    if data.get("busy"):
        return WorkerInfo(endpoint, False, [], f"{endpoint} is {BUSY}.")
    if data.get("error"):
        return WorkerInfo(endpoint, False, [], str(data["error"]))
    if "devices" not in data:
        tail = next((line for line in reversed(done.stderr.strip().splitlines()) if line.strip()), "no output")
        return WorkerInfo(endpoint, False, [], f"{endpoint} answered but not as this llama.cpp's RPC expects "
                          f"({tail.strip()}): run the same Hearth version on both machines.")
    devices = [WorkerDevice(str(d["name"]), str(d["description"]), int(d["free_bytes"]), int(d["total_bytes"]))
               for d in data["devices"]]
    if not devices:
        return WorkerInfo(endpoint, False, [], f"{endpoint} answered but offers no device.")
    return WorkerInfo(endpoint, True, devices)


def probe_many(endpoints: Sequence[str], timeout: float = 5.0) -> list[WorkerInfo]:
    """:func:`probe` each endpoint, in parallel; the answers in the same order."""
    if not endpoints:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(endpoints))) as pool:
        return list(pool.map(lambda e: probe(e, timeout), endpoints))


def _sentence(text: str) -> str:
    text = text.strip()
    return (text[:1].upper() + text[1:]).rstrip(".") + "."


# -- ggml through ctypes ---------------------------------------------------------------------------
class _Ggml:
    """The registry and device functions of the libggml that libllama links (the Python binding lacks them)."""

    def __init__(self) -> None:
        from core.engine.backends import library, load_backends

        load_backends()  # loads libggml-rpc.so too, in a GGML_BACKEND_DL build
        vp, sz, cp = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
        self.ggml = ggml = library("ggml")
        try:
            base = library("ggml-base")
        except OSError:
            base = ggml
        self.base = base
        ggml.ggml_backend_reg_by_name.restype, ggml.ggml_backend_reg_by_name.argtypes = vp, [cp]
        ggml.ggml_backend_register.restype, ggml.ggml_backend_register.argtypes = None, [vp]
        ggml.ggml_backend_dev_count.restype, ggml.ggml_backend_dev_count.argtypes = sz, []
        ggml.ggml_backend_dev_get.restype, ggml.ggml_backend_dev_get.argtypes = vp, [sz]
        ggml.ggml_backend_dev_by_type.restype, ggml.ggml_backend_dev_by_type.argtypes = vp, [ctypes.c_int]
        base.ggml_backend_reg_get_proc_address.restype = vp
        base.ggml_backend_reg_get_proc_address.argtypes = [vp, cp]
        base.ggml_backend_reg_dev_count.restype, base.ggml_backend_reg_dev_count.argtypes = sz, [vp]
        base.ggml_backend_reg_dev_get.restype, base.ggml_backend_reg_dev_get.argtypes = vp, [vp, sz]
        base.ggml_backend_reg_name.restype, base.ggml_backend_reg_name.argtypes = cp, [vp]
        base.ggml_backend_dev_backend_reg.restype, base.ggml_backend_dev_backend_reg.argtypes = vp, [vp]
        for fn in (base.ggml_backend_dev_name, base.ggml_backend_dev_description):
            fn.restype, fn.argtypes = cp, [vp]
        base.ggml_backend_dev_type.restype, base.ggml_backend_dev_type.argtypes = ctypes.c_int, [vp]
        base.ggml_backend_dev_memory.restype = None
        base.ggml_backend_dev_memory.argtypes = [vp, ctypes.POINTER(sz), ctypes.POINTER(sz)]
        base.ggml_backend_dev_get_props.restype = None
        base.ggml_backend_dev_get_props.argtypes = [vp, ctypes.POINTER(DevProps)]

    def rpc_reg(self) -> int:
        reg = self.ggml.ggml_backend_reg_by_name(b"RPC")
        if not reg:
            raise WorkerError("This Hearth's llama.cpp was built without its RPC backend (libggml-rpc), so it "
                              "cannot use other machines: reinstall Hearth, or rebuild llama.cpp with -DGGML_RPC=ON.")
        return int(reg)

    def proc(self, name: str, prototype: Any) -> Any:
        address = self.base.ggml_backend_reg_get_proc_address(self.rpc_reg(), name.encode())
        if not address:
            raise WorkerError(f"This Hearth's llama.cpp RPC backend lacks {name}: reinstall Hearth.")
        return prototype(address)

    def device(self, dev: int) -> WorkerDevice:
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        self.base.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        return WorkerDevice((self.base.ggml_backend_dev_name(dev) or b"").decode(errors="replace"),
                            (self.base.ggml_backend_dev_description(dev) or b"").decode(errors="replace"),
                            int(free.value), int(total.value))

    def local_gpus(self) -> list[int]:
        """This machine's GPUs (integrated ones too), not the RPC devices added to the registry; a GPU that two
        backends list (CUDA and Vulkan) once, under the first, as llama.cpp's own device list keeps it."""
        found: list[int] = []
        seen: set[bytes] = set()
        for i in range(self.ggml.ggml_backend_dev_count()):
            dev = self.ggml.ggml_backend_dev_get(i)
            if self.base.ggml_backend_dev_type(dev) not in (_GPU, _IGPU):
                continue
            reg = self.base.ggml_backend_dev_backend_reg(dev)
            if (self.base.ggml_backend_reg_name(reg) or b"").startswith(b"RPC"):
                continue
            props = DevProps()
            self.base.ggml_backend_dev_get_props(dev, ctypes.byref(props))
            if props.device_id:
                if props.device_id in seen:
                    continue
                seen.add(props.device_id)
            found.append(int(dev))
        return found

    def cpu(self) -> int:
        return int(self.ggml.ggml_backend_dev_by_type(_CPU))


_api: _Ggml | None = None
_added: dict[str, list[int]] = {}  # endpoint -> its devices, registered in this process
_ADD_SERVER = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)  # ggml_backend_rpc_add_server (ggml-rpc.h)
_START_SERVER = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t,
                                 ctypes.POINTER(ctypes.c_void_p))  # ggml_backend_rpc_start_server (ggml-rpc.h)


def ggml() -> _Ggml:
    """ggml's registry functions in this process (loads llama.cpp's backends on first use)."""
    global _api
    if _api is None:
        _api = _Ggml()
    return _api


def server_devices(endpoint: str, register: bool = True) -> list[int]:
    """Connect to the worker at ``endpoint`` and return its devices (ggml device handles).

    With ``register`` the server's registry joins ggml's (as llama.cpp's ``--rpc`` does, common/arg.cpp),
    once per process. ggml ABORTS this process when the worker does not answer: check it first.
    """
    if endpoint in _added:
        return _added[endpoint]
    api = ggml()
    reg = api.proc("ggml_backend_rpc_add_server", _ADD_SERVER)(endpoint.encode())
    if not reg:
        raise WorkerError(f"{endpoint} answered but offers no device.")
    devices = [int(api.base.ggml_backend_reg_dev_get(reg, i)) for i in range(api.base.ggml_backend_reg_dev_count(reg))]
    if register:
        api.ggml.ggml_backend_register(reg)
        _added[endpoint] = devices
    return devices


def added_endpoints() -> list[str]:
    """The workers whose devices this process has added to ggml's registry."""
    return list(_added)


# -- the server ------------------------------------------------------------------------------------
def _bind_address(host: str) -> str:
    """The IPv4 address to bind for ``host`` (ggml's server takes a dotted IPv4 address: transport.cpp)."""
    if host in ("localhost", "::1"):
        return "127.0.0.1"
    try:
        if ipaddress.ip_address(host).version == 6:
            raise WorkerError(f"llama.cpp's RPC server listens on IPv4 only: give --host an IPv4 address, not {host}.")
        return host
    except ValueError:
        pass
    try:
        return socket.gethostbyname(host)
    except OSError as exc:
        raise WorkerError(f"--host {host} is not an address of this machine: give one of its IPv4 addresses, "
                          "or 0.0.0.0 for all.") from exc


def _check_port(address: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ggml's server socket does
        try:
            sock.bind((address, port))
        except OSError as exc:
            if exc.errno == 98 or "in use" in str(exc):
                raise WorkerError(f"Port {port} on {address} is in use (another `hearth rpc-worker`?): pick another "
                                  "with --port.") from exc
            raise WorkerError(f"Cannot listen on {address}:{port} ({exc.strerror or exc}): give --host an address "
                              "of this machine and a free --port.") from exc


def _physical_cores() -> int:
    try:
        import psutil

        return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    except ImportError:
        return max(1, os.cpu_count() or 1)


def serve(host: str = "127.0.0.1", port: int = DEFAULT_PORT, *, cache: bool = False, threads: int | None = None,
          out: TextIO | None = None) -> int:
    """Serve this machine's best device(s) to other Hearths with llama.cpp's RPC server; blocks until Ctrl-C.

    The best devices are the GPUs ggml lists, else the CPU (tools/rpc/rpc-server.cpp ``get_devices``).
    ``cache`` keeps received tensors in Hearth's cache folder, so a model loads faster the next time.
    Returns only when the server could not run (raises ``WorkerError`` with the reason).
    """
    out = out or sys.stdout
    if not 1 <= port <= 65535:
        raise WorkerError(f"--port {port} is not a port: give a number from 1 to 65535.")
    address = _bind_address(host.strip())
    endpoint = f"{address}:{port}"
    _check_port(address, port)
    if host.strip() not in LOOPBACK_HOSTS:
        print(WARNING.format(endpoint=endpoint, port=port), file=sys.stderr, flush=True)
    api = ggml()
    start = api.proc("ggml_backend_rpc_start_server", _START_SERVER)
    devices = api.local_gpus() or [api.cpu()]
    n_threads = threads or _physical_cores()
    cache_dir = ""
    if cache:
        from core.paths import get_paths

        folder = get_paths().cache / "rpc"
        folder.mkdir(parents=True, exist_ok=True)
        cache_dir = str(folder)
    from core.units import human_size

    print(f"hearth rpc-worker: llama.cpp RPC server on {endpoint}", file=out)
    for dev in devices:
        info = api.device(dev)
        print(f"  device: {info.name} ({info.description}), {human_size(info.free_bytes)} free of "
              f"{human_size(info.total_bytes)}", file=out)
    print(f"  threads: {n_threads}; tensor cache: {cache_dir or 'off'}", file=out)
    print(f"Add it on the main computer with `hearth workers add ADDRESS:{port}`. It serves one Hearth at a time; "
          "press Ctrl-C to stop.", file=out, flush=True)
    array = (ctypes.c_void_p * len(devices))(*devices)
    # The server blocks in C: Python's Ctrl-C handler would never run, so Ctrl-C ends the process.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    start(endpoint.encode(), cache_dir.encode() or None, n_threads, len(devices), array)
    raise WorkerError(f"llama.cpp's RPC server could not listen on {endpoint}: give --host an address of this "
                      "machine and a free --port.")


# -- the probe's child process ---------------------------------------------------------------------
def _probe_child(endpoint: str, timeout: float) -> int:
    """Print one JSON line: the worker's devices, ``{"busy": true}`` or ``{"error": sentence}``."""
    try:
        api = ggml()
        api.rpc_reg()
    except (WorkerError, OSError) as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 0
    reason = _ipv4_only(endpoint)
    if reason:
        print(json.dumps({"error": _sentence(reason)}), flush=True)
        return 0
    result: dict[str, Any] = {}

    def ask() -> None:
        try:
            result["devices"] = [asdict(api.device(d)) for d in server_devices(endpoint, register=False)]
        except WorkerError as exc:
            result["error"] = str(exc)

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():  # connected, but the server is serving another client (one at a time)
        print(json.dumps({"busy": True}), flush=True)
        os._exit(3)  # the blocked C call cannot be interrupted
    print(json.dumps(result), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m core.engine.rpc")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe", help="print a worker's devices and memory as JSON")
    p.add_argument("endpoint")
    p.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    return _probe_child(parse_endpoint(args.endpoint), args.timeout)


if __name__ == "__main__":
    sys.exit(main())
