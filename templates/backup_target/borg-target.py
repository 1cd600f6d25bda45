#!/usr/bin/python3
# Managed by hypha-infra; edits are overwritten. The backup target's jobs, one per systemd timer:
#
#   watch    every few minutes: verify each repository against its last verified state (archive ids,
#            the transaction log, the segments; see "verification" below). A client-side delete, an
#            archive replaced under a known name, one dated outside the time it could have been made,
#            or a rewritten repository config: roll back to the last transaction before the harm, mark
#            the repository tampered (metric, alert) and stop its prune until `accept`.
#   prune    verify, borg prune (retention from the config), verify, compact, verify, per repository;
#            one repository's failure never stops the others (metrics and exit status say which).
#   offsite  copies every repository to the offsite server with rsync, under borg's own lock, into a
#            new dated snapshot hardlinked to the previous one (--link-dest); snapshots older than
#            offsite.keep_days are removed, so history survives whatever happens to the target copy.
#   accept   REPO: an admin takes what the repository holds now as verified (ends a tampered mark).
#   drill    restore drill: borg check, then extract the latest archive into a scratch directory,
#            check the canary is recent and the declared paths exist; status JSON + metrics.
#   metrics  repository sizes and free space for node_exporter's textfile collector.
#   export   REPO [PATH...]: the latest archive as a tar stream on stdout (restores elsewhere).
#   rollback REPO [N]: undo what was committed after transaction N (prints the log without N).
#
# Runs as root (passphrases are root-only files); every borg and rsync runs as the borg user and
# gets its passphrase on a pipe (BORG_PASSPHRASE_FD), never in the environment or on a command line.
import argparse
import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import pwd
import re
import shlex
import shutil
import struct
import subprocess
import sys
import time


def log(msg):
    print(msg, flush=True)


class Borg:
    def __init__(self, cfg):
        self.cfg = cfg
        pw = pwd.getpwnam(cfg["user"])
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "HOME": cfg["borg_home"],
            "BORG_BASE_DIR": cfg["borg_home"],
            # Only this account ever opens the repositories locally, always by the same path.
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "no",
            "BORG_CHECK_I_KNOW_WHAT_I_AM_DOING": "NO",
            "BORG_DELETE_I_KNOW_WHAT_I_AM_DOING": "NO",
        }

    def run(self, name, args, cwd=None, stdout=subprocess.PIPE, extra_env=None):
        """borg ARGS as the borg user for repository `name`; returns CompletedProcess (text)."""
        repo = self.cfg["repositories"][name]
        with open(repo["passphrase_file"], encoding="utf-8") as fh:
            passphrase = fh.read().rstrip("\n")
        r, w = os.pipe()
        os.write(w, (passphrase + "\n").encode())
        os.close(w)
        env = dict(self.env, BORG_PASSPHRASE_FD=str(r), **(extra_env or {}))
        try:
            return subprocess.run(
                ["borg", *args], env=env, cwd=cwd or self.cfg["borg_home"], pass_fds=(r,),
                stdout=stdout, stderr=subprocess.PIPE, text=stdout is subprocess.PIPE,
                user=self.uid, group=self.gid, extra_groups=[], stdin=subprocess.DEVNULL,
            )
        finally:
            os.close(r)

    def as_user(self, argv, **kw):
        return subprocess.run(argv, env=self.env, user=self.uid, group=self.gid, extra_groups=[],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, **kw)


def initialised(path):
    return os.path.isfile(os.path.join(path, "config"))


def archives(borg, name):
    path = borg.cfg["repositories"][name]["path"]
    out = borg.run(name, ["list", "--json", path])
    if out.returncode != 0:
        raise RuntimeError(f"borg list {path} failed ({out.returncode}): {out.stderr.strip()[-800:]}")
    return json.loads(out.stdout)["archives"]


def write_atomic(path, text, mode=0o644):
    tmp = f"{path}.new"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def prom(cfg, filename, lines):
    d = cfg["textfile_dir"]
    os.makedirs(d, exist_ok=True)
    write_atomic(os.path.join(d, filename), "".join(line + "\n" for line in lines))


# --- verification: what the repository really holds, from its own segments ----------------------------
#
# A client reaches its repository only through `borg serve --append-only` (authorized_keys), so every
# transaction it commits is written to the repository's `transactions` log (borg 1.2
# Repository.write_index logs only append-only commits), and a delete or prune from it only appends
# DELETE entries to new segments. The target's own borg (prune, compact, an admin on the target) opens
# the repository locally, not append-only: its commits are not in the log. So, transaction by
# transaction since the last verified one, the target knows who wrote it and what it did, whatever the
# client claims in archive names or timestamps.

MAGIC = b"BORG_SEG"
TAG_PUT, TAG_DELETE, TAG_COMMIT = 0, 1, 2
HEADER = struct.Struct("<IIB")  # crc32, size (header included), tag: borg 1.2 LoggedIO.header_fmt
MANIFEST_ID = bytes(32)


class Refused(Exception):
    """The repository cannot be verified now (busy, unreadable): nothing is pruned; not tampering."""


def index_transaction(path):
    """The last committed transaction: borg writes index.N after each commit (get_index_transaction_id)."""
    ids = [int(f[6:]) for f in os.listdir(path) if f.startswith("index.") and f[6:].isdigit()]
    return max(ids) if ids else None


def client_transactions(path):
    """Transaction ids a client committed (the append-only log; the target's own are not in it)."""
    try:
        with open(os.path.join(path, "transactions"), encoding="utf-8") as fh:
            return {int(line.split()[1].rstrip(",")) for line in fh if line.startswith("transaction ")}
    except FileNotFoundError:
        return set()


def segment_files(path):
    data = os.path.join(path, "data")
    found = []
    for sub in os.listdir(data) if os.path.isdir(data) else ():
        for seg in os.listdir(os.path.join(data, sub)):
            if seg.isdigit():
                found.append((int(seg), os.path.join(data, sub, seg)))
    return sorted(found)


def transactions_after(path, after, upto):
    """Committed transactions in (after, upto], each {id, committed (segment mtime, the target's clock),
    puts, deletes}: object ids, hex. A DELETE followed by a PUT of the same id is borg superseding an
    object (Repository.put), not a deletion; the manifest is rewritten that way by every commit."""
    out, puts, deletes = [], set(), []
    for number, filename in segment_files(path):
        if number <= after or number > upto:
            continue
        with open(filename, "rb") as fh:
            if fh.read(len(MAGIC)) != MAGIC:
                raise RuntimeError(f"segment {number} is not a borg 1.x segment")
            while True:
                head = fh.read(HEADER.size)
                if len(head) < HEADER.size:
                    break
                _crc, size, tag = HEADER.unpack(head)
                if tag in (TAG_PUT, TAG_DELETE):
                    key = fh.read(32)
                    if tag == TAG_PUT:
                        puts.add(key)
                        fh.seek(size - HEADER.size - 32, os.SEEK_CUR)
                    else:
                        deletes.append(key)
                elif tag == TAG_COMMIT:
                    gone = {k for k in deletes if k not in puts and k != MANIFEST_ID}
                    out.append({"id": number, "committed": os.stat(filename).st_mtime,
                                "puts": {k.hex() for k in puts}, "deletes": {k.hex() for k in gone}})
                    puts, deletes = set(), []
                else:
                    raise RuntimeError(f"segment {number}: unknown entry tag {tag}")
    return out


def _archive_time(a):
    # borg 1.2's --json times are the target's local time without a zone (OutputTimestamp).
    return datetime.datetime.fromisoformat(a["time"]).timestamp()


def _config_digest(path):
    # The client can rewrite the repository's config through borg serve (save_key: a new key or
    # passphrase locks the target out of every archive); nothing else of it may change either.
    with open(os.path.join(path, "config"), "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def state_path(cfg, name):
    return os.path.join(cfg["archive_state"], f"{name}.json")


def load_state(cfg, name):
    try:
        with open(state_path(cfg, name), encoding="utf-8") as fh:
            state = json.load(fh)
    except FileNotFoundError:
        return None
    # Before the verified state, this file held archive names only: start over from what is there.
    return state if isinstance(state, dict) and state.get("version") == 2 else None


def save_state(cfg, name, state):
    # The segments of the verified state: if any goes (a compact), rolling back past it is no longer safe.
    path = cfg["repositories"][name]["path"]
    state["segments"] = [n for n, _f in segment_files(path) if n <= state["transaction"]]
    write_atomic(state_path(cfg, name), json.dumps(state, indent=1, sort_keys=True) + "\n", 0o600)
    config_copy = os.path.join(cfg["archive_state"], f"{name}.config")
    if state.get("config_sha256") and not os.path.exists(config_copy + "." + state["config_sha256"][:16]):
        src = os.path.join(cfg["repositories"][name]["path"], "config")
        for old in os.listdir(cfg["archive_state"]):
            if old.startswith(f"{name}.config."):
                os.unlink(os.path.join(cfg["archive_state"], old))
        shutil.copy2(src, config_copy + "." + state["config_sha256"][:16])


def _record(a, txn):
    return {"name": a["archive"], "time": a["time"], "transaction": txn["id"] if txn else None,
            "arrived": int(txn["committed"]) if txn else None}


def snapshot(borg, name, path):
    """(transaction, archives by id), consistent: the listing is retried until no commit landed around it."""
    for _attempt in range(5):
        before = index_transaction(path)
        listed = archives(borg, name)
        if index_transaction(path) == before:
            return before, {a["id"]: a for a in listed}
        time.sleep(2)
    raise Refused("the client kept committing during verification; verified next time")


def verify(borg, cfg, name, now=None):
    """Compare the repository with its last verified state; roll back to the last good transaction and
    mark the repository tampered if a client deleted anything, replaced an archive under a known name,
    dated an archive outside the time it could have been made, or rewrote the repository's config.
    Returns the new state. Raises Refused while the repository stays marked (until `accept`)."""
    repo = cfg["repositories"][name]
    path = repo["path"]
    now = now or time.time()
    idle = not os.path.exists(os.path.join(path, "lock.exclusive"))
    state = load_state(cfg, name)
    config_changed = state is not None and _config_digest(path) != state["config_sha256"]
    if config_changed:
        # Before anything reads the repository with the target's passphrase: the saved config holds the key.
        restore_config(borg, cfg, name, state)
    current, present = snapshot(borg, name, path)
    if state is None:
        # Nothing verified yet (the first run after the repository appeared): what is there is the
        # baseline. The watch timer runs every few minutes, so this is minutes after the first backup.
        state = {"version": 2, "transaction": current or 0, "committed_at": now, "idle_at": now if idle else None,
                 "config_sha256": _config_digest(path), "archives": {i: _record(a, None) for i, a in present.items()},
                 "tampered": None, "verified_at": now}
        save_state(cfg, name, state)
        log(f"{name}: first verification: {len(present)} archive(s) at transaction {current} taken as the baseline")
        return state
    txns = transactions_after(path, state["transaction"], current or 0)
    by_client = client_transactions(path)
    problems, bad = [], []  # bad: ids of the transactions that did harm
    known = state["archives"]
    known_names = {r["name"] for r in known.values()}
    put_in = {i: t for t in txns for i in t["puts"]}
    deleted_in = {i: t for t in txns for i in t["deletes"]}
    deleted = []
    for t in txns:
        if t["id"] in by_client and t["deletes"]:
            bad.append(t["id"])
            gone = sorted(known[i]["name"] for i in t["deletes"] if i in known)
            deleted += gone
            if not gone:
                problems.append(f"transaction {t['id']} deleted {len(t['deletes'])} object(s) made since the last "
                                "verification (an archive created and deleted in between)")
    if deleted:
        problems.insert(0, f"archives deleted from the client side since the last verified state: {', '.join(deleted)}")
    for i, r in sorted(known.items()):
        if i not in present and i not in deleted_in:
            problems.append(f"archive {r['name']} vanished without a trace in the log")
            bad.append(state["transaction"] + 1)
    previous = state["committed_at"]
    lower_floor = state.get("idle_at") or 0
    slack = cfg["archive_time_slack_seconds"]
    new = {}
    for t in txns:
        mine = [i for i in present if i not in known and put_in.get(i) is t]
        for i in mine:
            a = present[i]
            new[i] = _record(a, t)
            if t["id"] not in by_client:
                continue  # made by borg on the target itself (an admin): its timestamp is trusted
            if a["archive"] in known_names:
                problems.append(f"archive {a['archive']} was replaced under the same name (transaction {t['id']})")
                bad.append(t["id"])
            lower, upper = max(previous, lower_floor) - slack, t["committed"] + slack
            if not lower <= _archive_time(a) <= upper:
                problems.append(f"archive {a['archive']} is dated {a['time']} but arrived between "
                                f"{_utc(max(previous, lower_floor))} and {_utc(t['committed'])} (transaction {t['id']})")
                bad.append(t["id"])
        previous = t["committed"]
    for i in present:
        if i not in known and i not in new:
            problems.append(f"archive {present[i]['archive']} appeared in no transaction since the last verified one")
            bad.append(state["transaction"] + 1)
    if config_changed:
        problems.append("the repository's config (its key) was rewritten from the client side; the saved one is back")
    # A client transaction in the log whose segments are gone: it committed between the prune's last
    # verification and its compact, which then compacted it. What it did can no longer be told.
    parsed = {t["id"] for t in txns}
    unseen = sorted(t for t in by_client if state["transaction"] < t <= (current or 0) and t not in parsed)
    if unseen:
        problems.append(f"client transaction(s) {', '.join(map(str, unseen))} were compacted before they could be "
                        "verified (committed during the prune); check the archives against the offsite history")
    if not problems:
        state.update(transaction=current or state["transaction"], committed_at=txns[-1]["committed"] if txns else
                     state["committed_at"], verified_at=now,
                     archives={i: known.get(i) or new[i] for i in present})
        if idle:
            state["idle_at"] = now
        save_state(cfg, name, state)
        if state.get("tampered"):
            # Still verified (and rolled back) every round, so later harm is undone too; only the prune waits.
            raise Refused(f"REFUSED: {state['tampered']['why']} (marked tampered since {_utc(state['tampered']['at'])}; "
                          f"README, Backups: inspect, then `accept {name}`)")
        return state
    first_bad = min(bad) if bad else current + 1
    good = max([state["transaction"]] + [t["id"] for t in txns if t["id"] < first_bad])
    # Never drop a transaction of the target's own that wrote data: a compact moves live objects into
    # new segments, an admin's archive is real. (Its prune's deletes and borg with-lock's manifest
    # rewrite may go: that only brings pruned archives back.)
    keep = max([t["id"] for t in txns if t["id"] not in by_client and t["puts"] - {MANIFEST_ID.hex()}], default=0)
    # Nor roll back over a compact at all: once segments of the verified state are gone, the live
    # objects (the manifest too) may sit only in newer segments.
    gone = set(state.get("segments", [])) - {n for n, _f in segment_files(path)}
    if bad and (good < keep or gone):
        problems.append("no rollback: the target compacted (or an admin wrote) since the harm; restore what is "
                        "missing from the offsite history")
        bad = []
    why = "; ".join(dict.fromkeys(problems))
    outcome = f"rolled back to transaction {good}" if bad else "not rolled back"
    if bad:
        log(f"{name}: TAMPERED: {why}. Rolling back to transaction {good}, the last before the harm.")
        rollback_locked(borg, cfg, name, good)
        current, present = snapshot(borg, name, path)
    else:
        log(f"{name}: TAMPERED: {why}.")
    missing = sorted(r["name"] for i, r in known.items() if i not in present and not deleted_in_own(txns, by_client, i))
    state.update(transaction=current or good, committed_at=max([state["committed_at"]] + [t["committed"] for t in txns
                                                                                           if t["id"] <= good]),
                 verified_at=now, config_sha256=_config_digest(path),
                 archives={i: known.get(i) or new.get(i) or _record(a, None) for i, a in present.items()},
                 tampered={"at": (state.get("tampered") or {}).get("at", int(now)),
                           "why": "; ".join(filter(None, [(state.get("tampered") or {}).get("why"), why])),
                           "rolled_back_to": good if bad else None, "still_missing": missing})
    save_state(cfg, name, state)
    if missing:
        log(f"{name}: these verified archives are STILL MISSING: {', '.join(missing)} "
            "(restore them from the offsite history)")
    raise Refused(f"REFUSED: {why}; {outcome}; nothing pruned or compacted "
                  f"(README, Backups: inspect, then `accept {name}`)")


def deleted_in_own(txns, by_client, archive_id):
    """True when borg on the target itself (an admin, this tool's prune) deleted the archive."""
    return any(archive_id in t["deletes"] and t["id"] not in by_client for t in txns)


def _utc(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


# Holds borg's own exclusive repository lock (borg.locking, as Repository.open takes it) until stdin
# closes. Not `borg with-lock`: that commits the repository's in-memory index when the command ends,
# which would undo a rollback made meanwhile.
LOCK_HOLDER = """
import sys
from borg.locking import Lock
lock = Lock(sys.argv[1] + "/lock", exclusive=True, timeout=600).acquire()
print("locked", flush=True)
sys.stdin.read()
lock.release()
"""


@contextlib.contextmanager
def repository_lock(borg, path):
    """The repository locked the way borg locks it, held by the borg user while this process works:
    no client transaction can start or commit meanwhile."""
    p = subprocess.Popen(["/usr/bin/python3", "-c", LOCK_HOLDER, path], env=borg.env, user=borg.uid, group=borg.gid,
                         extra_groups=[], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if p.stdout.readline().strip() != "locked":
            p.stdin.close()
            raise RuntimeError(f"could not lock {path}: {p.stderr.read().strip()[-400:]}")
        yield
    finally:
        if not p.stdin.closed:
            p.stdin.close()
        p.wait(120)


def restore_config(borg, cfg, name, state):
    saved = os.path.join(cfg["archive_state"], f"{name}.config.{state['config_sha256'][:16]}")
    path = cfg["repositories"][name]["path"]
    with repository_lock(borg, path):
        shutil.copy2(saved, os.path.join(path, "config"))
        os.chown(os.path.join(path, "config"), borg.uid, borg.gid)


def rollback_locked(borg, cfg, name, transaction):
    """Drop everything committed after `transaction` (borg 1.2's documented recovery from an append-only
    repository: newer segments, index and hints go, borg rebuilds them on the next open), and the log
    lines of what was dropped, so a later transaction reusing a number is not taken for a client's."""
    path = cfg["repositories"][name]["path"]
    removed = 0
    with repository_lock(borg, path):
        for number, filename in segment_files(path):
            if number > transaction:
                os.unlink(filename)
                removed += 1
        for f in os.listdir(path):
            if f.split(".")[0] in ("index", "hints", "integrity"):
                os.unlink(os.path.join(path, f))
        log_file = os.path.join(path, "transactions")
        if os.path.exists(log_file):
            with open(log_file, encoding="utf-8") as fh:
                lines = fh.read().splitlines(keepends=True)
            keep = [ln for ln in lines if not ln.startswith("transaction ") or int(ln.split()[1].rstrip(",")) <= transaction]
            with open(os.path.join(cfg["archive_state"], f"{name}.rolled-back.log"), "a", encoding="utf-8") as fh:
                fh.write(f"# rolled back to transaction {transaction} at {_utc(time.time())}\n")
                fh.writelines(ln for ln in lines if ln not in keep)
            write_atomic(log_file, "".join(keep), 0o600)
            os.chown(log_file, borg.uid, borg.gid)
        # This account's memory of the newer manifest (replay protection) and its cache are now wrong.
        repo_id = _repository_id(path)
        if repo_id:
            for d in (os.path.join(cfg["borg_home"], ".config/borg/security", repo_id),
                      os.path.join(cfg["borg_home"], ".cache/borg", repo_id)):
                shutil.rmtree(d, ignore_errors=True)
    return removed


def _repository_id(path):
    with open(os.path.join(path, "config"), encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("id = "):
                return line.split("=", 1)[1].strip()
    return None


@contextlib.contextmanager
def job_lock(cfg, wait=True):
    """One verifying job at a time (watch, prune, accept, rollback share the verified state)."""
    os.makedirs(cfg["archive_state"], exist_ok=True)
    with open(os.path.join(cfg["archive_state"], ".lock"), "w", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True


def job_metrics(cfg, job, results):
    """Per repository: did this job succeed (1/0); and, from the verified state, tampered and when verified."""
    m = cfg["metrics"]
    lines = [f"# HELP {m['job_ok']} 1 when the target's last run of the job on the repository succeeded.",
             f"# TYPE {m['job_ok']} gauge"]
    lines += [f'{m["job_ok"]}{{task="{job}",repository="{n}"}} {1 if ok else 0}' for n, ok in sorted(results.items())]
    prom(cfg, f"hypha_borg_{job}.prom", lines)
    lines = [f"# HELP {m['tampered']} 1 while the repository is marked tampered (client-side harm found and rolled back).",
             f"# TYPE {m['tampered']} gauge"]
    verified = [f"# HELP {m['verified']} Unix time the target last verified the repository.", f"# TYPE {m['verified']} gauge"]
    for name in sorted(cfg["repositories"]):
        state = load_state(cfg, name)
        if state is None:
            continue
        lines.append(f'{m["tampered"]}{{repository="{name}"}} {1 if state.get("tampered") else 0}')
        verified.append(f'{m["verified"]}{{repository="{name}"}} {int(state["verified_at"])}')
    prom(cfg, "hypha_borg_integrity.prom", lines + verified)


def each_repository(cfg, job, one):
    """Run `one(borg, cfg, name, repo)` on every repository; a failure is logged and reported, never fatal."""
    borg = Borg(cfg)
    results = {}
    for name, repo in sorted(cfg["repositories"].items()):
        if not initialised(repo["path"]):
            log(f"{name}: no repository yet (the client has not backed up); skipped")
            continue
        try:
            one(borg, cfg, name, repo)
            results[name] = True
        except Refused as exc:
            log(f"{name}: {exc}")
            results[name] = False
        except Exception as exc:  # noqa: BLE001 - one broken repository must not stop the others
            log(f"{name}: {job} FAILED: {type(exc).__name__}: {str(exc)[-800:]}")
            results[name] = False
    job_metrics(cfg, job, results)
    metrics(cfg)
    failed = sorted(n for n, ok in results.items() if not ok)
    if failed:
        log(f"{job} FAILED for: {', '.join(failed)}")
        return 1
    return 0


# --- watch / prune / accept --------------------------------------------------------------------------

def watch(cfg):
    with job_lock(cfg, wait=False) as got:
        if not got:
            log("another job is verifying; this round is skipped")
            return 0
        return each_repository(cfg, "watch", lambda borg, cfg, name, repo: verify(borg, cfg, name))


def prune_one(borg, cfg, name, repo):
    path = repo["path"]
    keep = cfg["retention"]
    verify(borg, cfg, name)
    flags = [f"--keep-daily={keep['daily']}", f"--keep-weekly={keep['weekly']}", f"--keep-monthly={keep['monthly']}"]
    out = borg.run(name, ["prune", "--list", *flags, path])
    if out.returncode != 0:
        raise RuntimeError(f"borg prune failed ({out.returncode}): {out.stderr.strip()[-800:]}")
    pruned = [line for line in out.stderr.splitlines() if line.startswith("Pruning archive")]
    # Again before the compact makes anything final: a client transaction during the prune is judged first.
    verify(borg, cfg, name)
    out = borg.run(name, ["compact", path])
    if out.returncode != 0:
        raise RuntimeError(f"borg compact failed ({out.returncode}): {out.stderr.strip()[-800:]}")
    state = verify(borg, cfg, name)
    log(f"{name}: kept {len(state['archives'])} archive(s), pruned {len(pruned)}")


def prune(cfg):
    with job_lock(cfg):
        return each_repository(cfg, "prune", prune_one)


def accept(cfg, name):
    with job_lock(cfg):
        state = load_state(cfg, name)
        if state and state.get("tampered"):
            log(f"{name}: the tampered mark of {_utc(state['tampered']['at'])} ends: {state['tampered']['why']}")
        if os.path.exists(state_path(cfg, name)):
            os.unlink(state_path(cfg, name))
        verify(Borg(cfg), cfg, name)
        job_metrics(cfg, "accept", {name: True})
    return 0


# --- offsite -----------------------------------------------------------------------------------------

SNAPSHOT = re.compile(r"^[0-9]{8}T[0-9]{6}Z$")


def offsite(cfg):
    o = cfg["offsite"]
    if not o:
        log("no offsite server configured")
        return 0
    borg = Borg(cfg)
    ssh = ["ssh", "-i", o["key"], "-p", str(o["port"]), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
           "-o", "ConnectTimeout=30", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={o['known_hosts']}"]
    login = f"{o['user']}@{o['host']}"

    def remote(command):
        out = borg.as_user([*ssh, login, command])
        if out.returncode != 0:
            raise RuntimeError(f"on the offsite server, {command!r} failed ({out.returncode}): {out.stderr.strip()[-400:]}")
        return out.stdout

    failed = []
    now = datetime.datetime.now(datetime.timezone.utc)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    for name, repo in sorted(cfg["repositories"].items()):
        path = repo["path"]
        if not initialised(path):
            log(f"{name}: no repository yet; skipped")
            continue
        started = time.monotonic()
        base = f"{o['path']}/{name}"
        try:
            snapshots = sorted(s for s in remote(f"mkdir -p {shlex.quote(base)} && ls -1 {shlex.quote(base)}").split()
                               if SNAPSHOT.match(s))
            # A new dated snapshot each time, unchanged files hardlinked to the previous one (borg never
            # rewrites a segment, so that is nearly all of them): nothing the target's copy loses, by a
            # deletion made final or by damage, reaches the snapshots already there.
            link = [f"--link-dest=../{snapshots[-1]}"] if snapshots else []
            # Under the repository's exclusive lock, so the copy is of one consistent state. The lock
            # itself is not copied: the copy must not look locked to a `borg check` over there.
            out = borg.as_user(["borg", "with-lock", path, "rsync", "-a", *link, "-e", shlex.join(ssh),
                                "--exclude=/lock.exclusive", "--exclude=/lock.roster",
                                f"{path}/", f"{login}:{base}/{stamp}.partial/"])
            if out.returncode != 0:
                raise RuntimeError(f"rsync failed ({out.returncode}): {(out.stderr or out.stdout).strip()[-800:]}")
            expired = [s for s in snapshots
                       if (now - datetime.datetime.strptime(s, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)).days
                       >= o["keep_days"]]
            q = lambda s: shlex.quote(f"{base}/{s}")  # noqa: E731
            remote(f"mv {q(stamp + '.partial')} {q(stamp)} && ln -sfn {shlex.quote(stamp)} {q('latest')}"
                   + "".join(f" && rm -rf -- {q(s)}" for s in expired))
            log(f"{name}: copied to {o['host']}:{base}/{stamp} in {time.monotonic() - started:.1f} s "
                f"({len(snapshots) + 1 - len(expired)} snapshot(s) kept, {len(expired)} expired)")
        except Exception as exc:  # noqa: BLE001 - one repository's failure must not stop the others' copies
            log(f"{name}: offsite copy FAILED: {exc}")
            failed.append(name)
    if failed:
        log(f"offsite copy FAILED for: {', '.join(failed)}")
        return 1
    return 0


# --- drill -------------------------------------------------------------------------------------------

def _count(root):
    files = size = 0
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            files += 1
            try:
                size += os.lstat(os.path.join(dirpath, n)).st_size
            except OSError:
                pass
    return files, size


def drill_one(borg, cfg, name, repo, now):
    res = {"ok": False, "archive": None, "archive_time": None, "canary_age_seconds": None, "missing": [],
           "files": 0, "bytes": 0, "check_seconds": None, "extract_seconds": None, "error": None}
    path = repo["path"]
    if not initialised(path):
        res["error"] = "no repository: the client has never backed up"
        return res
    started = time.monotonic()
    out = borg.run(name, ["check", path])
    res["check_seconds"] = round(time.monotonic() - started, 2)
    if out.returncode != 0:
        res["error"] = f"borg check failed ({out.returncode}): {out.stderr.strip()[-600:]}"
        return res
    found = archives(borg, name)
    if not found:
        res["error"] = "the repository holds no archive"
        return res
    latest = max(found, key=lambda a: a["time"])
    res["archive"], res["archive_time"] = latest["archive"], latest["time"]
    scratch = os.path.join(cfg["scratch"], name)
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)
    os.chown(scratch, borg.uid, borg.gid)
    os.chmod(scratch, 0o700)
    started = time.monotonic()
    out = borg.run(name, ["extract", f"{path}::{latest['archive']}"], cwd=scratch)
    res["extract_seconds"] = round(time.monotonic() - started, 2)
    try:
        if out.returncode != 0:
            res["error"] = f"borg extract failed ({out.returncode}): {out.stderr.strip()[-600:]}"
            return res
        res["files"], res["bytes"] = _count(scratch)
        canary = os.path.join(scratch, cfg["canary"])
        try:
            with open(canary, encoding="utf-8") as fh:
                written = int(fh.read().split()[0])
        except (OSError, ValueError, IndexError) as exc:
            res["error"] = f"no readable canary in the archive ({cfg['canary']}): {exc}"
            return res
        res["canary_age_seconds"] = int(now - written)
        res["missing"] = [p for p in repo["expect"] if not os.path.lexists(os.path.join(scratch, p))]
        problems = []
        if res["canary_age_seconds"] > cfg["canary_max_age_seconds"]:
            problems.append(f"the canary is {res['canary_age_seconds'] // 3600} h old "
                            f"(limit {cfg['canary_max_age_seconds'] // 3600} h): backups stopped")
        if res["missing"]:
            problems.append(f"missing from the archive: {', '.join(res['missing'])}")
        if problems:
            res["error"] = "; ".join(problems)
            return res
        res["ok"] = True
        return res
    finally:
        # The restored data is sensitive and large: keep nothing of it around.
        shutil.rmtree(scratch, ignore_errors=True)


def drill(cfg):
    borg = Borg(cfg)
    started = time.monotonic()
    now = time.time()
    previous = {}
    if os.path.exists(cfg["status"]):
        try:
            with open(cfg["status"], encoding="utf-8") as fh:
                previous = json.load(fh).get("repositories", {})
        except (OSError, ValueError):
            previous = {}
    results = {}
    for name, repo in sorted(cfg["repositories"].items()):
        try:
            res = drill_one(borg, cfg, name, repo, now)
        except Exception as exc:  # a broken repository must not stop the drill of the others
            res = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        res["last_success"] = int(now) if res["ok"] else previous.get(name, {}).get("last_success")
        results[name] = res
        log(f"{name}: {'ok' if res['ok'] else 'FAILED: ' + str(res.get('error'))}")
    status = {
        "host": cfg["host"], "finished": int(time.time()),
        "seconds": round(time.monotonic() - started, 2), "ok": all(r["ok"] for r in results.values()),
        "repositories": results,
    }
    write_atomic(cfg["status"], json.dumps(status, indent=2, sort_keys=True) + "\n", 0o644)
    m = cfg["metrics"]
    lines = [f"# HELP {m['drill_ok']} 1 when the last restore drill of the repository passed.",
             f"# TYPE {m['drill_ok']} gauge"]
    lines += [f'{m["drill_ok"]}{{repository="{n}"}} {1 if r["ok"] else 0}' for n, r in sorted(results.items())]
    lines += [f"# HELP {m['drill_last_success']} Unix time of the last restore drill of the repository that passed.",
              f"# TYPE {m['drill_last_success']} gauge"]
    lines += [f'{m["drill_last_success"]}{{repository="{n}"}} {r["last_success"]}'
              for n, r in sorted(results.items()) if r["last_success"] is not None]
    prom(cfg, "hypha_restore_drill.prom", lines)
    if not status["ok"]:
        log("restore drill FAILED for: " + ", ".join(n for n, r in sorted(results.items()) if not r["ok"]))
        return 1
    log(f"restore drill passed for {len(results)} repositories in {status['seconds']} s")
    return 0


# --- metrics / export --------------------------------------------------------------------------------

def _du(path):
    total = 0
    for dirpath, _dirs, names in os.walk(path):
        for n in names:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_blocks * 512
            except OSError:
                pass
    return total


def metrics(cfg):
    m = cfg["metrics"]
    st = os.statvfs(cfg["repository_dir"])
    lines = [f"# HELP {m['repository_size']} Size on disk of the borg repository.", f"# TYPE {m['repository_size']} gauge"]
    lines += [f'{m["repository_size"]}{{repository="{n}"}} {_du(r["path"])}' for n, r in sorted(cfg["repositories"].items())]
    lines += [f"# HELP {m['repository_quota']} The storage quota borg serve enforces on the client's repository.",
              f"# TYPE {m['repository_quota']} gauge"]
    lines += [f'{m["repository_quota"]}{{repository="{n}"}} {r["quota_bytes"]}' for n, r in sorted(cfg["repositories"].items())]
    lines += [f"# HELP {m['repository_free']} Free bytes on the filesystem holding the repositories.",
              f"# TYPE {m['repository_free']} gauge",
              f'{m["repository_free"]}{{path="{cfg["repository_dir"]}"}} {st.f_bavail * st.f_frsize}']
    prom(cfg, "hypha_borg.prom", lines)
    return 0


def export(cfg, name, paths):
    """The latest archive of `name` (only `paths` if given) as a tar stream on stdout."""
    if name not in cfg["repositories"]:
        log(f"unknown repository {name!r}; known: {', '.join(sorted(cfg['repositories']))}")
        return 2
    borg = Borg(cfg)
    latest = max(archives(borg, name), key=lambda a: a["time"])
    print(f"exporting {name}::{latest['archive']}", file=sys.stderr, flush=True)
    out = borg.run(name, ["export-tar", f"{cfg['repositories'][name]['path']}::{latest['archive']}", "-",
                          *[p.lstrip("/") for p in paths]], stdout=sys.stdout.buffer)
    if out.returncode != 0:
        sys.stderr.write(out.stderr.decode(errors="replace") if isinstance(out.stderr, bytes) else out.stderr)
    return out.returncode


def rollback(cfg, name, transaction):
    """Undo what was committed after `transaction` (append-only: deletes are only logged until a compact)."""
    repo = cfg["repositories"][name]["path"]
    with open(os.path.join(repo, "transactions"), encoding="utf-8") as fh:
        log_lines = fh.read().splitlines()
    if transaction is None:
        print("\n".join(log_lines))
        print(f"choose the last good transaction and run: rollback {name} <N>")
        return 2
    if not any(line.startswith(f"transaction {transaction},") for line in log_lines):
        log(f"{name}: no transaction {transaction} in {repo}/transactions")
        return 2
    with job_lock(cfg):
        borg = Borg(cfg)
        removed = rollback_locked(borg, cfg, name, transaction)
        found = sorted(a["archive"] for a in archives(borg, name))
        # What is there now is what the admin chose: the verified state follows it (a tampered mark stays
        # until `accept`).
        state = load_state(cfg, name)
        if state is not None:
            current, present = snapshot(borg, name, repo)
            state.update(transaction=current or transaction, verified_at=time.time(), config_sha256=_config_digest(repo),
                         archives={i: state["archives"].get(i) or _record(a, None) for i, a in present.items()})
            save_state(cfg, name, state)
    repo_id = _repository_id(repo)
    log(f"{name}: rolled back to transaction {transaction} ({removed} newer segment(s) removed); "
        f"archives now: {', '.join(found) or 'none'}. On the client, remove /root/.config/borg/security/{repo_id} "
        f"and /root/.cache/borg/{repo_id} before its next backup.")
    return 0


def main(argv):
    parser = argparse.ArgumentParser(description="hypha-infra backup target jobs")
    parser.add_argument("--config", required=True)
    parser.add_argument("job", choices=["watch", "prune", "offsite", "drill", "metrics", "export", "rollback", "accept"])
    parser.add_argument("args", nargs="*")
    a = parser.parse_args(argv)
    with open(a.config, encoding="utf-8") as fh:
        cfg = json.load(fh)
    if a.job == "export":
        if not a.args:
            parser.error("export needs a repository name")
        return export(cfg, a.args[0], a.args[1:])
    if a.job == "rollback":
        if not a.args or a.args[0] not in cfg["repositories"]:
            parser.error(f"rollback needs a repository name: {', '.join(sorted(cfg['repositories']))}")
        return rollback(cfg, a.args[0], int(a.args[1]) if len(a.args) > 1 else None)
    if a.job == "accept":
        if not a.args or a.args[0] not in cfg["repositories"]:
            parser.error(f"accept needs a repository name: {', '.join(sorted(cfg['repositories']))}")
        return accept(cfg, a.args[0])
    return {"watch": watch, "prune": prune, "offsite": offsite, "drill": drill, "metrics": metrics}[a.job](cfg)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
