"""Runs the Pulumi program for one stack under Pulumi's mock runtime and records what it registers.

The offline plan, the tests and the benchmarks all go through `run_stack`, so they see exactly
what `pulumi preview` would send to the engine: resource types, names, parents, inputs and options.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import runpy
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
import pulumi
from pulumi.runtime import mocks as pmocks
from pulumi.runtime import settings as psettings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from model.load import PROJECT, ROOT, read_stack_config

MAIN = ROOT / "__main__.py"

# Placeholder secrets so the program can run offline; real ones come from `pulumi config set --secret`.
OFFLINE_SECRETS = {
    "proxmoxve:apiToken": "offline@pam!plan=00000000-0000-0000-0000-000000000000",
    f"{PROJECT}:deployPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\noffline-placeholder\n-----END OPENSSH PRIVATE KEY-----\n",
    # Monitoring's (render/roles/monitoring.py LATE); the UI logins are a JSON map of person to bcrypt hash.
    f"{PROJECT}:alertSmtpPassword": "offline-placeholder",
    f"{PROJECT}:alertMatrixWebhookUrl": "https://matrix.invalid/offline-placeholder",
    f"{PROJECT}:pveExporterToken": "00000000-0000-0000-0000-000000000000",
    f"{PROJECT}:monitoringUiPasswordHashes": '{"offline-placeholder": "$2y$10$offlineplaceholderofflineplaceholderofflineplacehol"}',
}


@dataclass
class Registered:
    urn: str
    type: str
    name: str
    parent: str
    custom: bool
    inputs: dict
    protect: bool
    ignore_changes: list[str]
    dependencies: list[str]
    provider: str
    delete_before_replace: bool = False
    secret_inputs: frozenset = frozenset()
    """Top-level input names whose value is (or contains) a Pulumi secret."""

    @property
    def parent_name(self) -> str:
        return self.parent.rsplit("::", 1)[-1] if self.parent else ""


@dataclass
class Run:
    stack: str
    resources: list[Registered] = field(default_factory=list)
    exports: dict[str, Any] = field(default_factory=dict)

    def of_type(self, type_: str) -> list[Registered]:
        return [r for r in self.resources if r.type == type_]

    def by_urn(self) -> dict[str, Registered]:
        return {r.urn: r for r in self.resources}

    def children(self, parent: Registered) -> list[Registered]:
        return [r for r in self.resources if r.parent == parent.urn]


class _Mocks(pmocks.Mocks):
    """Returns inputs as outputs, plus the ids the Proxmox provider would compute."""

    def __init__(self, tls_keys: Optional[Mapping[str, dict]] = None):
        super().__init__()
        self.tls_keys = dict(tls_keys or {})

    def new_resource(self, args: pmocks.MockResourceArgs):
        state = dict(args.inputs)
        if args.typ == "proxmoxve:index/fileLegacy:FileLegacy":
            raw = plain(state.get("sourceRaw")) or {}
            state["fileName"] = raw.get("fileName", "")
            return f"{state.get('datastoreId')}:snippets/{state['fileName']}", state
        if args.typ == "proxmoxve:index/poolLegacy:PoolLegacy":
            return state.get("poolId", args.name), state
        if args.typ == "proxmoxve:index/vmLegacy:VmLegacy":
            return str(state.get("vmId", args.name)), state
        if args.typ == "tls:index/privateKey:PrivateKey":
            if args.name in self.tls_keys:  # a key the caller made (the lab's, which its hosts get)
                state.update(self.tls_keys[args.name])
            elif state.get("algorithm") == "RSA":
                state.update(_mock_rsa(int(state.get("rsaBits", 2048))))
            else:
                state.update(_mock_ed25519(args.name))
        if args.typ == "random:index/randomPassword:RandomPassword":
            state["result"] = _mock_password(args.name, int(state.get("length", 32)))
        return f"{args.name}-id", state

    def call(self, args: pmocks.MockCallArgs):
        return {}, None


def _seed(name: str) -> bytes:
    """Generated values derive from the resource's name: real, and the same in every run and stack."""
    return hashlib.sha256(f"hypha-infra mock {name}".encode()).digest()


def tls_outputs(private_openssh: str, public_openssh: str) -> dict:
    """tls.PrivateKey's outputs for a key given in its OpenSSH forms, those kept byte for byte."""

    key = ser.load_ssh_private_key(private_openssh.encode(), password=None)
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    out = _tls_outputs("RSA" if is_rsa else "ED25519", key,
                       ser.PrivateFormat.TraditionalOpenSSL if is_rsa else ser.PrivateFormat.PKCS8)
    return {**out, "privateKeyOpenssh": private_openssh, "publicKeyOpenssh": public_openssh}


def _tls_outputs(algorithm: str, key, pem_format) -> dict:
    """tls.PrivateKey's outputs for a cryptography private key: OpenSSH and PEM forms."""

    public = key.public_key()
    return {
        "algorithm": algorithm,
        "privateKeyOpenssh": key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.OpenSSH, ser.NoEncryption()).decode(),
        "privateKeyPem": key.private_bytes(ser.Encoding.PEM, pem_format, ser.NoEncryption()).decode(),
        "publicKeyOpenssh": public.public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH).decode() + "\n",
        "publicKeyPem": public.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo).decode(),
    }


@functools.lru_cache(maxsize=None)
def _mock_ed25519(name: str) -> dict:
    """A real ED25519 key pair, as tls.PrivateKey returns it (OpenSSH and PEM forms); cached, because
    the OpenSSH form carries a random check number that would differ between two runs."""

    return _tls_outputs("ED25519", ed25519.Ed25519PrivateKey.from_private_bytes(_seed(name)), ser.PrivateFormat.PKCS8)


_RSA: dict[int, dict] = {}
_RSA_LOCK = threading.Lock()


def _mock_rsa(bits: int) -> dict:
    """A real RSA key pair as tls.PrivateKey returns it, one per size and process, shared by every
    resource: RSA has no seeded form here, a 4096-bit key takes ~0.35 s (500 hosts in
    bench/plan_scale.py would spend minutes), and only Ed25519 keys are pinned or shown by `make plan`.
    Locked: the mocks register resources from several threads, and two keys would make two runs differ."""

    with _RSA_LOCK:
        if bits not in _RSA:
            key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
            _RSA[bits] = _tls_outputs("RSA", key, ser.PrivateFormat.TraditionalOpenSSL)
        return _RSA[bits]


def _mock_password(name: str, length: int) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    seed, out = _seed(name), []
    while len(out) < length:
        seed = hashlib.sha256(seed).digest()
        out += [alphabet[b % len(alphabet)] for b in seed]
    return "".join(out[:length])


class _RecordingMonitor(pmocks.MockMonitor):
    def __init__(self, mocks: _Mocks, run: Run):
        super().__init__(mocks)
        self._run = run

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            inputs = self.resources[response.urn].state if response.urn in self.resources else {}
            self._run.resources.append(
                Registered(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    parent=request.parent,
                    custom=bool(request.custom),
                    inputs=dict(inputs),
                    protect=bool(request.protect),
                    ignore_changes=list(request.ignoreChanges),
                    dependencies=list(request.dependencies),
                    provider=request.provider,
                    delete_before_replace=bool(request.deleteBeforeReplace),
                    secret_inputs=frozenset(k for k, v in request.object.fields.items() if _has_secret(v)),
                )
            )
        return response


# How the wire format marks a secret value (pulumi.runtime.rpc).
_SIG_KEY = "4dabf18193072939515e22adb298388d"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"


def plain(value: Any) -> Any:
    """A recorded input with its secret wrapper (how the wire marks a secret) taken off, if it has one."""
    if isinstance(value, dict) and value.get(_SIG_KEY) == _SECRET_SIG:
        return value.get("value")
    return value


def _has_secret(value) -> bool:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        fields = value.struct_value.fields
        if _SIG_KEY in fields and fields[_SIG_KEY].string_value == _SECRET_SIG:
            return True
        return any(_has_secret(v) for v in fields.values())
    if kind == "list_value":
        return any(_has_secret(v) for v in value.list_value.values)
    return False


def pulumi_config(raw: dict[str, Any], secrets: Optional[dict[str, str]] = None) -> tuple[dict[str, str], list[str]]:
    """The config map the engine would hand the program: JSON strings under namespaced keys."""
    cfg = {f"{PROJECT}:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}
    secrets = OFFLINE_SECRETS if secrets is None else secrets
    cfg.update(secrets)
    return cfg, list(secrets)


def run_stack(
    stack: str,
    raw: Optional[dict[str, Any]] = None,
    secrets: Optional[dict[str, str]] = None,
    preview: bool = True,
    root: Path = ROOT,
    tls_keys: Optional[Mapping[str, dict]] = None,
) -> Run:
    """Run __main__.py for `stack` with `raw` config (default: the stack files) and record everything.

    Raises whatever the program raises, e.g. model.errors.ConfigError for bad config; by then
    nothing has been registered, which the tests check through `last_run`.
    `tls_keys`: tls.PrivateKey outputs by resource name (`tls_outputs`), in place of the mocks' own
    keys; a lab passes the host keys it delivers, so the commands pin what its hosts answer with.
    """
    global last_run
    if raw is None:
        raw = read_stack_config(stack, root)
    run = Run(stack)
    last_run = run
    mocks = _Mocks(tls_keys)
    psettings.ROOT.set(None)  # a fresh Stack resource per run, several runs per process
    pmocks.set_mocks(mocks, project=PROJECT, stack=stack, preview=preview, monitor=_RecordingMonitor(mocks, run))
    cfg, secret_keys = pulumi_config(raw, secrets)
    set_all_config(cfg, secret_keys)

    def program():
        runpy.run_path(str(MAIN), run_name="__pulumi_main__")

    # The SDK links many objects per resource (futures, tasks, Outputs); repeated full GC passes
    # over that growing heap made large stacks superlinear (bench/plan_scale.py: ~35% at 500 hosts).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        _sync_await(run_pulumi_func(program))
        root_resource = psettings.get_root_resource()
        outputs = getattr(root_resource, "outputs", {}) if root_resource else {}
        run.exports = {k: _sync_await(_resolve(v)) for k, v in outputs.items()}
    finally:
        if was_enabled:
            gc.enable()
    return run


async def _resolve(value: Any) -> Any:
    return await pulumi.Output.from_input(value).future()


last_run: Optional[Run] = None
