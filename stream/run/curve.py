"""CurveZMQ for the workers' endpoint: encrypted and authenticated over TCP.

A key directory (`peakstream keys DIR`) holds the processor's pair
(`server.key`, `server.key_secret`) and one pair per kind of worker
(`worker.key`, `worker.key_secret`, more with other names). The dispatcher's
ROUTER is a CURVE server with the server's secret key and lets in only the
workers whose public key is a `*.key` file of the directory (zmq.auth's ZAP
handler); a worker is a CURVE client with its own pair and the server's public
key. Loopback endpoints (ipc://, inproc://, tcp://127.x / ::1 / localhost) need
no keys; any other address does, and without them the dispatcher does not bind.
A refused worker is logged (WARNING, once a minute per address and key) with its
public key, so that the operator can see which pair is missing from the directory.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import zmq

from stream.wire.sockets import is_loopback

log = logging.getLogger(__name__)

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
    d = Path(directory)
    public, secret = _pair(d, SERVER)
    auth = _authenticator(ctx, d)
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=auth)
    sock.curve_secretkey, sock.curve_publickey = secret, public
    sock.curve_server = True
    return auth


def client_keys(directory: str | Path, name: str = WORKER) -> tuple[bytes, bytes, bytes]:
    """The worker pair `name` and the server's public key of a worker's key directory:
    FileNotFoundError or ValueError naming the file that is missing or holds no key."""
    d = Path(directory)
    public, secret = _pair(d, name)
    return public, secret, server_public(d)


def _authenticator(ctx: zmq.Context, directory: Path) -> Any:
    """A ZAP handler that admits the public keys of the directory's *.key files (read
    once, as zmq.auth's own) and logs the keys it refuses."""
    import zmq.auth
    from zmq.auth.thread import ThreadAuthenticator

    admitted = set(zmq.auth.load_certificates(directory))
    refused: dict[tuple[str, bytes], float] = {}  # (address, key): when last logged

    class Admit(ThreadAuthenticator):
        address = "?"

        async def handle_zap_message(self, msg: list[bytes]) -> None:
            self.address = msg[3].decode("utf-8", "replace") if len(msg) > 3 else "?"
            await super().handle_zap_message(msg)

        def callback(self, domain: str, key: bytes) -> bool:  # key: z85
            if key in admitted:
                return True
            now, last = time.monotonic(), refused.get((self.address, key))
            if last is None or now - last >= 60:
                refused[(self.address, key)] = now
                log.warning("refused a worker at %s: its public key %s is not in any *.key "
                            "of %s (copy its NAME.key there, or give it a pair made there "
                            "by `peakstream keys %s --name NAME`)", self.address,
                            key.decode("ascii", "replace"), directory, directory)
            return False

    return Admit(ctx)


def secure_client(sock: zmq.Socket, directory: str | Path, name: str = WORKER) -> None:
    """Make `sock` a CURVE client with the pair `name` that trusts the directory's server."""
    public, secret, server = client_keys(directory, name)
    sock.curve_secretkey, sock.curve_publickey = secret, public
    sock.curve_serverkey = server
