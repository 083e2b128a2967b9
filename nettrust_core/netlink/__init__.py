"""Netlink for NetTrust: framing, one socket class, and the codecs of three netfilter subsystems.

Standard library only: everything here runs inside Unbound (the nf_tables write on every answer).
Layers, each importing only the ones above it in this list:

- :mod:`.wire` — bytes on the wire: netlink and nfnetlink headers, attributes, errors.
- :mod:`.core` — :class:`~.core.NetlinkSocket`: one persistent NETLINK_NETFILTER socket, batches
  with their acks, dumps, single requests.
- :mod:`.nftables` — nf_tables set elements in and out (the answer path, and why it is
  hand-written); :class:`~.nftables.NftablesSocket` adds the set-element verbs to the socket.
- :mod:`.nftables_state` — tables, chains, rule expressions, counters: state read for people.
- :mod:`.conntrack` — ctnetlink: the mark-filtered dump request and its entries.
- :mod:`.nflog` — nfnetlink_log: the group bind messages and the logged packets.

The firewall backend (:mod:`nettrust_core.firewall.nftables`) and the grant lifecycle
(:mod:`nettrust_core.lifecycle`) import from here; nothing here imports from either.  Threads,
timing and decisions live with the callers: this package only encodes, decodes and exchanges.
"""
