"""The fleet: masters publish every grant into one Redis stream, followers apply them.

- :mod:`.entries`: what a stream entry holds (one answer's grants, or a config announcement)
  and how a hostile one is refused;
- :mod:`.connect`: the Redis client (``rediss://`` with a client certificate; plaintext only
  on loopback and only when asked for); :mod:`.certs`: a lab CA and node certificates;
- :mod:`.publisher`: the master's background publisher fed by a bounded queue (the answer path
  only enqueues), and :mod:`.hold`: the bounded wait for the client's follower to confirm;
- :mod:`.follower`: ``nettrust follow``: replay from a cursor or the snapshot, then ``XREAD
  BLOCK``, applying with the resolver's never-shorten tracker and writer;
- :mod:`.config_doc`: the versioned configuration document followers fetch and validate;
- :mod:`.tracker_redis`: the shared host tracker (``fleet.tracker = "redis"``);
- :mod:`.master`: wires the master's parts into a resolver (:class:`nettrust_core.service.Service`).

Expiry stays in each machine's kernel sets: nothing in Redis has a per-key TTL.
"""
