"""Grant lifecycle: what happens to a grant between the answer that made it and its end.

- :mod:`.caps` — per-name and per-set caps, applied on the answer path (no system call unless
  a set must make room).
- :mod:`.conntrack` / :mod:`.liveness` — renew grants that still carry a live connection,
  asking conntrack with one kernel-filtered dump per check.
- :mod:`.nflog` / :mod:`.unauthorized` — connection attempts the firewall refused, as events.
- :mod:`.chains` — every base chain on our hooks, with warnings when one can change what ours sees.
- :mod:`.supervisor` — the background threads, started by ``Service.start`` and joined by
  ``Service.stop``, and the counters they send to the agent.

Everything here runs inside Unbound: standard library only, parsing independent of word size and
byte order, and any kernel error degrades (counted, logged) instead of raising into Unbound.
"""
