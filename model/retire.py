"""Retired services (`services.<name>.retired`): which services no longer run, and the checks that keep a retirement whole.

A retired service stays in the catalog so that its names keep answering: the proxy sends them to
`retired.redirect` (301) or answers 410, the zone keeps their records and the certificate keeps
being renewed. Nothing else treats it as running: no upstream, no open port, no probe, no alert.
Its data is still backed up while its host exists (the host is a backup client as before), so the
final backup a host's removal needs (policy/policies.py, prod-data-host-removal) comes from the
nightly run; once the host is removed, its repository stays on the target, readable while the
retired entry declares its data (model.derive_backup.kept).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .derive_backup import clients as backup_clients
from .errors import Problem


def is_live(service) -> bool:
    """Runs and is served as itself: not retired."""
    return service.retired is None


def live(services: dict) -> dict:
    """The services that are not retired, by name."""
    return {n: s for n, s in services.items() if s.retired is None}


def retired(services: dict) -> dict:
    """The retired services, by name, sorted."""
    return {n: s for n, s in sorted(services.items()) if s.retired is not None}


def retired_domains(services: dict) -> dict[str, str]:
    """Every name of a retired service to that service."""
    return {d: n for n, s in retired(services).items() for d in s.domains}


def check_retired(hosts: dict, services: dict) -> list[Problem]:
    """A retirement that cannot be served as written: a redirect nobody would answer, one that
    loops back to the service's own names or on to another retired service, a shortener retired
    while it still serves shortlinks.csv. (Shortlinks pointing at a retired name are refused by
    render/shortlinks.py, which reads the file.)"""
    out: list[Problem] = []
    gone = retired_domains(services)
    for name, svc in retired(services).items():
        p = f"services.{name}.retired"
        r = svc.retired
        if svc.shortlinks:
            out.append(Problem(f"services.{name}.shortlinks",
                               "a retired service is no longer the link shortener: remove `shortlinks: true` "
                               "(its links stop with it) or remove `retired`"))
        if r.redirect is None:
            continue
        if not svc.public:
            out.append(Problem(f"{p}.redirect",
                               f"only the reverse proxy answers a retired service's names, and only for public services; "
                               f"services.{name} is not public, so nothing would send this redirect: remove `redirect` "
                               "or set `public: true`"))
        target = (urlsplit(r.redirect).hostname or "").lower()
        if target in svc.domains:
            out.append(Problem(f"{p}.redirect",
                               f"{r.redirect} is on {target}, one of this service's own names, which answers with this "
                               "same redirect: a loop; send people to another site"))
        elif target in gone:
            other = services[gone[target]].retired
            answer = "410 Gone" if other.gone else f"a redirect to {other.redirect}"
            out.append(Problem(f"{p}.redirect",
                               f"{r.redirect} is on {target}, a name of services.{gone[target]}, which is retired too "
                               f"(it answers {answer}); redirect to where people should end up"))
    return out


def summary(stack) -> list[dict]:
    """One entry per retired service, for the plan (`make plan`) and other readers: its date, what
    its names answer, and whether its host is still in the stack (its data still backed up)."""
    clients = set(backup_clients(stack))
    return [
        {
            "service": name,
            "date": svc.retired.date.isoformat(),
            "status": svc.retired.status,
            "redirect": svc.retired.redirect,
            "domains": list(svc.domains) if svc.public else [],
            "host": svc.host,
            "host_removed": svc.host not in stack.hosts,
            "backed_up": svc.host in clients,
        }
        for name, svc in retired(stack.services).items()
    ]
