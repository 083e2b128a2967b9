"""What the answer path does to grant an answer's addresses, in the order it does it.

After the policy's verdict (:mod:`nettrust_core.policy`) and before the firewall write
(:mod:`nettrust_core.firewall`), all under the tracker's lock and without waiting on disk or
another server:

- :mod:`.timeouts` — how long each address is granted: ``clamp(ttl, min_ttl, max_ttl) + grace``,
  and the comment that names the answer in the kernel's set.
- :mod:`.caps` — budgets per name, registrable domain and client; the per-set cap that evicts
  before a set fills.
- :mod:`.tracker` — what is granted until when: a later, shorter answer never shortens a grant.
- :mod:`.writer` — which grants need a kernel write (asking the kernel about unknown addresses
  while a restart's adoption still runs), and the write itself under the set caps.

:class:`nettrust_core.authorizer.Authorizer` drives these for one answer.  The background work
that keeps grants honest (liveness renewals, the adoption thread, the periodic ruleset check)
lives in :mod:`nettrust_core.lifecycle`.
"""
