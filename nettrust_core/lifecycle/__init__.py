"""Grant lifecycle: the background work between the answer that made a grant and its end.

The answer path's own grant logic (timeouts, caps, the never-shorten tracker, the write) is
:mod:`nettrust_core.grants`; what runs here runs in :class:`~nettrust_core.worker.Worker` threads
or in the CLI, never on an answer.

- :mod:`.adoption` — after a restart, the kernel's live grants read back into the tracker.
- :mod:`.conntrack` / :mod:`.liveness` — renew grants that still carry a live connection,
  asking conntrack with one kernel-filtered dump per check.
- :mod:`.nflog` / :mod:`.unauthorized` — connection attempts the firewall refused, as events.
- :mod:`.chains` / :mod:`.status` — every base chain on our hooks, with warnings when one can
  change what ours sees, and the lifecycle part of ``nettrust status`` (the CLI's process).
- :mod:`.supervisor` — the background threads, started by ``Service.start`` and joined by
  ``Service.stop``, and the counters they send to the agent.

Everything here runs inside Unbound: standard library only, parsing independent of word size and
byte order, and any kernel error degrades (counted, logged) instead of raising into Unbound.
"""
