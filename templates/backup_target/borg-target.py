#!/usr/bin/python3
# Managed by hypha-infra; edits are overwritten. The backup target's jobs, one per systemd timer:
#
#   prune    borg prune (retention from the config) + compact, per repository. Refuses a
#            repository whose archives vanished since the last run without this job pruning
#            them: a client can only mark archives deleted in an append-only repository, and a
#            compact would make that final. Roll back first (README, "Backups").
#   offsite  copies every repository to the offsite server with rsync, under borg's own lock.
#   drill    restore drill: borg check, then extract the latest archive into a scratch directory,
#            check the canary is recent and the declared paths exist; status JSON + metrics.
#   metrics  repository sizes and free space for node_exporter's textfile collector.
#   export   REPO [PATH...]: the latest archive as a tar stream on stdout (restores elsewhere).
#   rollback REPO [N]: undo a client's deletes after transaction N (prints the log without N).
#
# Runs as root (passphrases are root-only files); every borg and rsync runs as the borg user and
# gets its passphrase on a pipe (BORG_PASSPHRASE_FD), never in the environment or on a command line.
import argparse
import datetime
import json
import os
import pwd
import shutil
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


# --- prune -------------------------------------------------------------------------------------------

def prune(cfg):
    borg = Borg(cfg)
    keep = cfg["retention"]
    failed = []
    for name, repo in sorted(cfg["repositories"].items()):
        path = repo["path"]
        if not initialised(path):
            log(f"{name}: no repository yet (the client has not backed up); skipped")
            continue
        state_file = os.path.join(cfg["archive_state"], f"{name}.json")
        before = {a["archive"] for a in archives(borg, name)}
        if os.path.exists(state_file):
            with open(state_file, encoding="utf-8") as fh:
                known = set(json.load(fh))
            vanished = sorted(known - before)
            if vanished:
                log(f"{name}: REFUSED: archives deleted from the client side since the last prune: "
                    f"{', '.join(vanished)}; nothing pruned or compacted. Roll the repository back "
                    "(README, Backups) or, if the deletion was wanted, remove "
                    f"{state_file} and run again.")
                failed.append(name)
                continue
        flags = [f"--keep-daily={keep['daily']}", f"--keep-weekly={keep['weekly']}", f"--keep-monthly={keep['monthly']}"]
        out = borg.run(name, ["prune", "--list", *flags, path])
        if out.returncode != 0:
            log(f"{name}: borg prune failed ({out.returncode}): {out.stderr.strip()[-800:]}")
            failed.append(name)
            continue
        pruned = [line for line in out.stderr.splitlines() if line.startswith("Pruning archive")]
        out = borg.run(name, ["compact", path])
        if out.returncode != 0:
            log(f"{name}: borg compact failed ({out.returncode}): {out.stderr.strip()[-800:]}")
            failed.append(name)
            continue
        after = sorted(a["archive"] for a in archives(borg, name))
        write_atomic(state_file, json.dumps(after) + "\n", 0o600)
        log(f"{name}: kept {len(after)} archive(s), pruned {len(pruned)}")
    metrics(cfg)
    if failed:
        log(f"prune FAILED for: {', '.join(failed)}")
        return 1
    return 0


# --- offsite -----------------------------------------------------------------------------------------

def offsite(cfg):
    o = cfg["offsite"]
    if not o:
        log("no offsite server configured")
        return 0
    borg = Borg(cfg)
    ssh = (f"ssh -i {o['key']} -p {o['port']} -o IdentitiesOnly=yes -o BatchMode=yes -o ConnectTimeout=30 "
           f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={o['known_hosts']}")
    failed = []
    for name, repo in sorted(cfg["repositories"].items()):
        path = repo["path"]
        if not initialised(path):
            log(f"{name}: no repository yet; skipped")
            continue
        started = time.monotonic()
        # Under the repository's exclusive lock, so the copy is of one consistent state; --delete
        # makes it an exact copy that `borg check` accepts on the offsite server.
        # The lock itself is not copied: the copy must not look locked to a `borg check` over there.
        out = borg.as_user(["borg", "with-lock", path, "rsync", "-a", "--delete", "--mkpath", "-e", ssh,
                            "--exclude=/lock.exclusive", "--exclude=/lock.roster",
                            f"{path}/", f"{o['user']}@{o['host']}:{o['path']}/{name}/"])
        if out.returncode != 0:
            log(f"{name}: offsite copy FAILED ({out.returncode}): {(out.stderr or out.stdout).strip()[-800:]}")
            failed.append(name)
        else:
            log(f"{name}: copied to {o['host']}:{o['path']}/{name} in {time.monotonic() - started:.1f} s")
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
    """Undo what a client did after `transaction` (append-only: deletes are only logged until a compact)."""
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
    removed = 0
    data = os.path.join(repo, "data")
    for sub in os.listdir(data):
        for seg in os.listdir(os.path.join(data, sub)):
            if seg.isdigit() and int(seg) > transaction:
                os.unlink(os.path.join(data, sub, seg))
                removed += 1
    for f in os.listdir(repo):
        if f.split(".")[0] in ("index", "hints", "integrity"):
            os.unlink(os.path.join(repo, f))
    # This account's memory of the newer manifest (replay protection) and its cache are now wrong.
    repo_id = None
    with open(os.path.join(repo, "config"), encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("id = "):
                repo_id = line.split("=", 1)[1].strip()
    if repo_id:
        for d in (os.path.join(cfg["borg_home"], ".config/borg/security", repo_id),
                  os.path.join(cfg["borg_home"], ".cache/borg", repo_id)):
            shutil.rmtree(d, ignore_errors=True)
    found = sorted(a["archive"] for a in archives(Borg(cfg), name))
    log(f"{name}: rolled back to transaction {transaction} ({removed} newer segment(s) removed); "
        f"archives now: {', '.join(found) or 'none'}. On the client, remove /root/.config/borg/security/{repo_id} "
        f"and /root/.cache/borg/{repo_id} before its next backup.")
    return 0


def main(argv):
    parser = argparse.ArgumentParser(description="hypha-infra backup target jobs")
    parser.add_argument("--config", required=True)
    parser.add_argument("job", choices=["prune", "offsite", "drill", "metrics", "export", "rollback"])
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
    return {"prune": prune, "offsite": offsite, "drill": drill, "metrics": metrics}[a.job](cfg)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
