"""After a list reload: grants whose names the new lists deny are revoked, and those names are
removed from Unbound's cache (cache hits never reach the module, so without this a newly listed
name would keep being answered, and stay reachable, until its TTL ran out).

Runs in the lists watcher's thread.  The tracker's lock is held only to copy its name table and to forget the revoked addresses; the names are judged outside it, so answers are never
held up by the scan (~1 µs per tracked name).
"""

from __future__ import annotations

import logging

from ..errors import NetTrustError
from ..networks import key_address

log = logging.getLogger("nettrust.lists")


def revoke_newly_denied(authorizer) -> int:
    """Revoke the live grants whose question name or chain end the policy now blocks; how many."""
    tracker, policy = authorizer.tracker, authorizer.policy
    with tracker.lock:
        table = tracker.name_table()
    allowed: dict[str, bool] = {}
    doomed, denied = [], []
    for key, names in table:
        for name in names:
            if not name:
                continue
            ok = allowed.get(name)
            if ok is None:
                ok = allowed[name] = policy.check_name(name).allowed
                if not ok:
                    denied.append(name)
            if not ok:
                doomed.append(key_address(key))
                break
    if not doomed:
        return 0
    try:
        with tracker.lock:
            authorizer.backend.revoke(doomed)
            names = tracker.forget(doomed)
    except NetTrustError as exc:
        authorizer.counters["lists_revoke_errors"] += 1
        log.error("lists reloaded, but revoking %d grants of newly denied names failed: %s; they "
                  "lapse at their timeouts", len(doomed), exc)
        return 0
    authorizer.counters["revoked_by_lists"] += len(doomed)
    authorizer.invalidate(names + denied)
    log.warning("lists reloaded: revoked %d grants of %d newly denied name(s) (%s)", len(doomed),
                len(denied), ", ".join(denied[:5]) + (" ..." if len(denied) > 5 else ""))
    return len(doomed)
