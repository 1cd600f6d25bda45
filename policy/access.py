"""Who gets into a host: prod logins for admins only, no password or root login, pinned host keys, the bound deploy key.

Which VMs are prod comes from their tags (`derive.vm_tags` puts the stack name on every VM), never
from the stack's name, so a prod VM that turns up in the wrong stack is still judged as prod.
"""

from __future__ import annotations

import json
import re
from typing import Optional

from pulumi_policy import PolicyConfigSchema, ReportViolation, ResourceValidationArgs, StackValidationArgs

from model import derive
from policy.registry import resource_policy, stack_policy, tag, tag_schema
from policy.view import (
    AUTHORIZED_KEYS_DIR,
    COMMAND,
    DEPLOY_USER,
    SNIPPET,
    HostView,
    hosts,
    revealed,
    script_files,
    snippet_text,
    stack_model,
    user_data_files,
    with_tag,
)

SSHD_FILE = re.compile(r"^/etc/ssh/sshd_config(\.d/.*)?$")
DEPLOY_FILE = f"{AUTHORIZED_KEYS_DIR}{DEPLOY_USER}"

_ADMINS_SCHEMA = PolicyConfigSchema(
    {
        "minAdmins": {"type": "integer", "default": 2, "description": "Fewest people with a prod login."},
        "maxAdmins": {"type": "integer", "default": 3, "description": "Most people with a prod login."},
        "prodTag": tag_schema("prodTag"),
    }
)

# ---------------------------------------------------------------------------------------------------
# prod SSH only for 2-3 admins


def _is_login(line: str) -> bool:
    """A key that gets a shell. One bound to a forced command under `restrict` (the borg target's
    `borg serve` per client) runs that command only: a service, not a person's login."""
    forced = re.search(r'(?:^|,)command="', line) and re.search(r"(?:^|,)restrict(?:,|\s)", line)
    return not forced


def _logins(view: HostView) -> set[str]:
    """Accounts that can log in with a key: key files with a login key, cloud-init users with keys."""
    names = set()
    for _where, f in view.all_files():
        if f.path.startswith(AUTHORIZED_KEYS_DIR) and any(_is_login(k) for k in _key_lines(f.content)):
            names.add(f.path[len(AUTHORIZED_KEYS_DIR):])
    for user in view.user_data.get("users") or []:
        if isinstance(user, dict) and user.get("ssh_authorized_keys"):
            names.add(str(user.get("name")))
    names.discard(DEPLOY_USER)
    return names


def _key_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


@stack_policy(
    "prod-ssh-admins-only", "Prod SSH is for 2 or 3 infrastructure admins only.", config_schema=_ADMINS_SCHEMA,
)
def prod_ssh_admins_only(args: StackValidationArgs, report: ReportViolation) -> None:
    cfg = args.get_config()
    low, high = int(cfg.get("minAdmins", 2)), int(cfg.get("maxAdmins", 3))
    admins = set(stack_model().access.admins)
    for view in with_tag(hosts(args.resources), tag(args, "prodTag")):
        logins = _logins(view)
        strangers = sorted(logins - admins)
        if strangers:
            report(f"{view.name}: {', '.join(strangers)} can log in but {'is' if len(strangers) == 1 else 'are'} not "
                   f"in access.admins; prod logins are for admins only (site.ssh_access: admins)", view.vm.urn)
        if not low <= len(logins) <= high:
            report(f"{view.name}: {len(logins)} people can log in ({', '.join(sorted(logins)) or 'nobody'}); "
                   f"prod needs between {low} and {high} admins (access.admins)", view.vm.urn)


# ---------------------------------------------------------------------------------------------------
# no password login, no root login


def sshd_problems(path: str, text: str) -> list[str]:
    """What in one sshd config file lets a password or root in."""
    bad = {
        "passwordauthentication": lambda v: v != "no",
        "permitrootlogin": lambda v: v != "no",
        "kbdinteractiveauthentication": lambda v: v != "no",
        "challengeresponseauthentication": lambda v: v != "no",
        "permitemptypasswords": lambda v: v != "no",
    }
    out = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(None, 1)
        if len(words) == 2 and words[0].lower() in bad and bad[words[0].lower()](words[1].strip().lower()):
            out.append(f"{path}: `{line.strip()}`")
    return out


def _turns_off(files: list[tuple[str, str]], keyword: str) -> bool:
    return any(
        re.search(rf"^\s*{keyword}\s+no\s*$", text, re.I | re.M) for path, text in files if SSHD_FILE.match(path)
    )


def _login_problems(files: list[tuple[str, str]]) -> list[str]:
    sshd = [(p, t) for p, t in files if SSHD_FILE.match(p)]
    out = [p for path, text in sshd for p in sshd_problems(path, text)]
    if sshd:
        # Debian's own sshd_config leaves password login on: our drop-in must say no, not stay silent.
        for keyword in ("PasswordAuthentication", "PermitRootLogin"):
            if not _turns_off(sshd, keyword):
                out.append(f"no sshd file says `{keyword} no` (Debian's default lets it in)")
    return out


@resource_policy(
    "no-password-or-root-login", "No password login and no root login in any cloud-init or sshd file.",
)
def no_password_or_root_login(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == SNIPPET:
        data, files = user_data_files(snippet_text(args.props))
        if not data:
            return
        if data.get("ssh_pwauth") is not False:
            report(f"cloud-init: ssh_pwauth is {data.get('ssh_pwauth')!r}; it must be false")
        if data.get("disable_root") is False:
            report("cloud-init: disable_root is false; root must not log in")
        for user in data.get("users") or []:
            if not isinstance(user, dict):
                continue
            name = user.get("name", "?")
            if user.get("lock_passwd") is False or any(k in user for k in ("passwd", "hashed_passwd", "plain_text_passwd")):
                report(f"cloud-init: user {name} gets a password; logins are by key only")
            if name == "root" and user.get("ssh_authorized_keys"):
                report("cloud-init: root gets an SSH key; root must not log in")
        if data.get("chpasswd"):
            report("cloud-init: chpasswd sets passwords; logins are by key only")
        for problem in _login_problems([(f.path, f.content) for f in files.values()]):
            report(f"cloud-init: {problem}")
    elif args.resource_type == COMMAND:
        files = script_files(str(args.props.get("stdin") or ""))
        for problem in _login_problems([(f.path, f.content) for f in files.values()]):
            report(f"converge: {problem}")
        root_keys = [p for p in files if p in (f"{AUTHORIZED_KEYS_DIR}root", "/root/.ssh/authorized_keys")]
        for path in root_keys:
            report(f"converge: {path} gives root a key; root must not log in")


# ---------------------------------------------------------------------------------------------------
# every host's SSH identity is the program's, and every connection pins it

_HOST_KEY = re.compile(r"ssh-ed25519 [A-Za-z0-9+/]+={0,2}")


@resource_policy(
    "ssh-host-keys-pinned", "Every host's SSH host key is the program's, and every SSH leg pins it.",
)
def ssh_host_keys_pinned(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == COMMAND:
        conn = revealed(args.props.get("connection")) or {}
        legs = [("connection", conn)] + ([("proxy", conn["proxy"])] if conn.get("proxy") else [])
        for leg, c in legs:
            if not _HOST_KEY.fullmatch(str(c.get("hostKey") or "")):
                report(f"the {leg} to {c.get('host')} pins no ssh-ed25519 host key: without `host_key` the command "
                       "provider accepts whatever answers (components/host_keys.py makes the pins)")
    elif args.resource_type == SNIPPET:
        data, _files = user_data_files(snippet_text(args.props))
        if not data:
            return
        keys = data.get("ssh_keys") or {}
        if data.get("ssh_deletekeys") is not True or not {"ed25519_private", "ed25519_public"} <= set(keys):
            report("cloud-init: the VM's host keys must be the program's (`ssh_keys` with ed25519_private and "
                   "ed25519_public, `ssh_deletekeys: true`); a key the VM makes itself is pinned nowhere")


# ---------------------------------------------------------------------------------------------------
# the deploy key only on the deploy user, bound to the deploy host's address


def _blob(line: str) -> Optional[str]:
    """The base64 part of an authorized_keys line (options first or not)."""
    m = re.search(r"(?:^|\s)(?:ssh-|ecdsa-|sk-)\S+\s+([A-Za-z0-9+/=]{16,})", line)
    return m.group(1) if m else None


@stack_policy(
    "deploy-key-bound", "The deploy key is only on the deploy user and only accepted from the deploy host's address.",
)
def deploy_key_bound(args: StackValidationArgs, report: ReportViolation) -> None:
    stack = stack_model()
    deploy_blob = stack.access.deploy.public_key.split()[1]
    views = hosts(args.resources)
    # Not the gateway's LAN address: every member's jumped session arrives from that one. The deploy
    # user's alone leave from the deploy address (model/derive.py deploy_address).
    deploy_address = derive.deploy_address(stack)
    for name, view in sorted(views.items()):
        urn = view.vm.urn if view.vm else None
        # The gateway accepts the key from the deployment server; every other host from the
        # gateway's deploy address, since deploy sessions are jumped through it.
        expected = str(stack.access.deploy.source) if "gateway" in view.tags else deploy_address
        deploy_files = []
        for where, f in view.all_files():
            if f.path == DEPLOY_FILE:
                deploy_files.append((where, f))
            elif deploy_blob in f.content:
                report(f"{name}: the deploy key is in {f.path} ({where}); it belongs only in {DEPLOY_FILE}", urn)
        for user in view.user_data.get("users") or []:
            if isinstance(user, dict) and deploy_blob in json.dumps(user.get("ssh_authorized_keys") or []):
                report(f"{name}: cloud-init gives user {user.get('name')} the deploy key", urn)
        for where, f in deploy_files:
            for line in _key_lines(f.content):
                if _blob(line) != deploy_blob:
                    report(f"{name}: {DEPLOY_FILE} ({where}) holds a key that is not the deploy key: {line[:60]}…", urn)
                    continue
                source = re.search(r'(?:^|,)from="([^"]*)"', line)
                if source is None:
                    report(f"{name}: the deploy key ({where}) has no from= option; bind it to {expected}", urn)
                elif source.group(1) != expected:
                    report(f"{name}: the deploy key ({where}) is accepted from {source.group(1)}, not only {expected}", urn)
                if not re.search(r"(?:^|,)restrict(?:,|\s)", line):
                    report(f"{name}: the deploy key ({where}) lacks `restrict` (no pty, agent or X11 for it)", urn)
