"""The mail host's DKIM keys: one tls.PrivateKey (RSA 2048) per published selector, and the zone
record data of its public half. What render/roles/mail.py's late values name:

  mail/dkim-key/<selector>     the private key (PEM), a Pulumi secret, OpenDKIM's KeyFile
  mail/dkim-record/<selector>  the public key as the record's `p=` value, zone-file strings

A key lives as long as its selector is listed (mail.dkim_selector or mail.retired_selectors): a new
selector makes a new key, dropping a retired one destroys its key.
"""

from __future__ import annotations

import pulumi
import pulumi_tls as tls

from model import mail as mail_model
from model.stack import Stack
from render.roles import dns as render_dns
from render.roles import mail as render_mail


def public_key_record(public_key_pem: str) -> str:
    """The `p=` of a DKIM key record as zone-file strings: the base64 SubjectPublicKeyInfo (RFC 6376
    section 3.6.1), i.e. the PEM body without its armour, in strings of at most 255 bytes."""
    body = "".join(line for line in public_key_pem.strip().splitlines() if not line.startswith("-----"))
    return render_dns.txt_data(body)


class DkimKeys:
    def __init__(self, stack: Stack):
        self.stack = stack
        self._keys: dict[str, tls.PrivateKey] = {}

    def key(self, selector: str) -> tls.PrivateKey:
        if selector not in mail_model.signing_selectors(self.stack.mail):
            raise KeyError(f"DKIM selector {selector!r} is not in the mail section")
        if selector not in self._keys:
            self._keys[selector] = tls.PrivateKey(
                f"dkim-{selector}", algorithm="RSA", rsa_bits=render_mail.KEY_BITS
            )
        return self._keys[selector]

    def late_value(self, name: str) -> pulumi.Output[str]:
        """The value behind a `mail/...` placeholder: the key a secret, the record public."""
        kind, _, selector = name.removeprefix("mail/").partition("/")
        if kind == "dkim-key":
            return pulumi.Output.secret(self.key(selector).private_key_pem)
        if kind == "dkim-record":
            return self.key(selector).public_key_pem.apply(public_key_record)
        raise KeyError(f"late value {name!r} is not made by components/mail.py")
