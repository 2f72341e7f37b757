"""CurveZMQ for the workers' endpoint: encrypted and authenticated over TCP.

A key directory (`peakstream keys DIR`) holds the processor's pair
(`server.key`, `server.key_secret`) and one pair per kind of worker
(`worker.key`, `worker.key_secret`, more with other names). The dispatcher's
ROUTER is a CURVE server with the server's secret key and lets in only the
workers whose public key is a `*.key` file of the directory (zmq.auth's ZAP
handler); a worker is a CURVE client with its own pair and the server's public
key. Loopback endpoints (ipc://, inproc://, tcp://127.x / ::1 / localhost) need
no keys; any other address does, and without them the dispatcher does not bind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import zmq

from stream.wire.sockets import is_loopback

SERVER = "server"
WORKER = "worker"


def need_keys(endpoint: str, keys: str | Path | None) -> None:
    """ValueError if `endpoint` is reachable from other hosts and no keys are given."""
    if not keys and not is_loopback(endpoint):
        raise ValueError(f"workers endpoint {endpoint} is reachable from other hosts: it "
                         f"needs CurveZMQ keys ([workers] keys = \"DIR\", made by "
                         f"`peakstream keys DIR`), or a loopback address")


def make_keys(directory: str | Path, name: str = WORKER) -> list[Path]:
    """The server pair (if the directory has none yet) and the pair `name`; the
    secret files readable by their owner only. FileExistsError if `name` exists."""
    import zmq.auth

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if (d / f"{name}.key").exists() or (d / f"{name}.key_secret").exists():
        raise FileExistsError(f"{d / name}.key exists: choose another --name")
    made = []
    for who in ([SERVER] if not (d / f"{SERVER}.key_secret").exists() else []) + [name]:
        public, secret = zmq.auth.create_certificates(d, who)
        os.chmod(secret, 0o600)
        made += [Path(public), Path(secret)]
    return made


def _pair(directory: Path, name: str) -> tuple[bytes, bytes]:
    import zmq.auth

    path = directory / f"{name}.key_secret"
    if not path.exists():
        hint = "" if name in (SERVER, WORKER) else f" --name {name}"
        raise FileNotFoundError(f"{path}: no such key file (make a pair with "
                                f"`peakstream keys DIR{hint}` and copy {name}.key and "
                                f"{name}.key_secret here)")
    public, secret = zmq.auth.load_certificate(path)
    if secret is None:
        raise ValueError(f"{path}: holds no secret key")
    return public, secret


def server_public(directory: str | Path) -> bytes:
    """The processor's public key (what a worker needs to know it)."""
    import zmq.auth

    path = Path(directory) / f"{SERVER}.key"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such key file (copy it from the processor's "
                                f"key directory)")
    return zmq.auth.load_certificate(path)[0]


def secure_server(sock: zmq.Socket, ctx: zmq.Context, directory: str | Path) -> Any:
    """Make `sock` a CURVE server that admits the directory's public keys; returns the
    started authenticator (stop it when the socket is closed)."""
    from zmq.auth.thread import ThreadAuthenticator

    d = Path(directory)
    public, secret = _pair(d, SERVER)
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(d))
    sock.curve_secretkey, sock.curve_publickey = secret, public
    sock.curve_server = True
    return auth


def client_keys(directory: str | Path, name: str = WORKER) -> tuple[bytes, bytes, bytes]:
    """The worker pair `name` and the server's public key of a worker's key directory:
    FileNotFoundError or ValueError naming the file that is missing or holds no key."""
    d = Path(directory)
    public, secret = _pair(d, name)
    return public, secret, server_public(d)


def secure_client(sock: zmq.Socket, directory: str | Path, name: str = WORKER) -> None:
    """Make `sock` a CURVE client with the pair `name` that trusts the directory's server."""
    public, secret, server = client_keys(directory, name)
    sock.curve_secretkey, sock.curve_publickey = secret, public
    sock.curve_serverkey = server
