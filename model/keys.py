"""Parsing and strength rules for OpenSSH public keys in the people config."""

from __future__ import annotations

import base64
import binascii
import re
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

MIN_RSA_BITS = 3072
# As model/types.py refuses them everywhere: C0, DEL, C1 and the Unicode line separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

# Security keys (FIDO) are fine; DSA is broken and OpenSSH itself refuses it since 9.8.
ACCEPTED_TYPES = {
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
}


class KeyError_(ValueError):
    """A public key that must not be deployed; the message says why and what to do."""


@dataclass(frozen=True)
class PublicKey:
    type: str
    blob: str
    comment: str

    @property
    def line(self) -> str:
        """The key as it goes into authorized_keys (without options)."""
        return f"{self.type} {self.blob}" + (f" {self.comment}" if self.comment else "")

    @property
    def fingerprint_input(self) -> str:
        return f"{self.type} {self.blob}"


def _first_string(blob: bytes) -> str:
    if len(blob) < 4:
        raise KeyError_("the key data is truncated; paste the whole .pub file line")
    (n,) = struct.unpack(">I", blob[:4])
    if n > len(blob) - 4:
        raise KeyError_("the key data is truncated; paste the whole .pub file line")
    return blob[4 : 4 + n].decode("ascii", "replace")


def parse_public_key(text: str) -> PublicKey:
    """Parse one `type base64 [comment]` line; raise KeyError_ naming the fix if it must be refused."""
    if not isinstance(text, str) or not text.strip():
        raise KeyError_("empty key; paste the whole line of the .pub file")
    leaked = private_key_problem(text)
    if leaked:
        raise KeyError_(leaked)
    if text != text.strip() or "\n" in text:
        raise KeyError_("key has leading/trailing whitespace or a line break; paste it as one line")
    if _CONTROL.search(text):
        raise KeyError_("key holds a control character (tab, NUL, DEL ...); paste the .pub file line unchanged")
    parts = text.split(None, 2)
    if len(parts) < 2:
        raise KeyError_("not an OpenSSH public key (expected `<type> <base64> [comment]`)")
    ktype, b64 = parts[0], parts[1]
    comment = parts[2] if len(parts) > 2 else ""
    if ktype == "ssh-dss":
        raise KeyError_("DSA keys are insecure and refused; generate one with `ssh-keygen -t ed25519`")
    if ktype not in ACCEPTED_TYPES:
        raise KeyError_(
            f"key type {ktype!r} is not accepted (use ssh-ed25519, ecdsa or RSA of {MIN_RSA_BITS}+ bits)"
        )
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise KeyError_("the key's base64 data is malformed; paste the .pub file line unchanged") from None
    inner = _first_string(blob)
    if inner != ktype:
        raise KeyError_(
            f"key says {ktype!r} but its data is a {inner!r} key; the line was edited, "
            "paste the .pub file line unchanged"
        )
    if not ktype.startswith("sk-"):
        try:
            key = load_ssh_public_key(f"{ktype} {b64}".encode())
        except (ValueError, TypeError) as exc:
            raise KeyError_("the key data does not parse as a public key; paste the .pub file line unchanged") from None
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
            raise KeyError_(
                f"RSA key of {key.key_size} bits is too weak (minimum {MIN_RSA_BITS}); "
                "generate one with `ssh-keygen -t ed25519`"
            )
    return PublicKey(ktype, b64, comment)


def check_public_key(text: str) -> str:
    """A field validator: `text` must be one public key line we accept (raises KeyError_, a ValueError)."""
    parse_public_key(text)
    return text


# Headers of private keys in the formats people have on disk: OpenSSH, PEM (PKCS#1/#8, EC, DSA,
# encrypted), PuTTY, and a WireGuard config's [Interface] line.
_PRIVATE_MARKERS = (
    "PRIVATE KEY-----",
    "PuTTY-User-Key-File-",
    "PrivateKey =",
    "PrivateKey=",
)


def private_key_problem(text: object) -> str | None:
    """The message for a private key pasted where a public one belongs, or None.

    The value is in a stack file, so in git history and every clone: the key is exposed whatever
    happens to this config, and the only fix is a new key pair.
    """
    if not isinstance(text, str) or not any(m in text for m in _PRIVATE_MARKERS):
        return None
    return (
        "this is a PRIVATE key, not a public one: it is now exposed (it is in the stack file and its git history), "
        "so rotate it: generate a new key pair, paste only the public half here (the .pub line, or `wg pubkey` "
        "output), and remove the old key everywhere it is trusted"
    )
