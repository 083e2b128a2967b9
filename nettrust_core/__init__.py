"""NetTrust core: a DNS-driven egress firewall's policy, answer model and firewall backends.

A plain library, importable and testable without Unbound or root.  The Unbound adapter in
``unbound_module/`` only translates Unbound's objects into the values defined here.
"""

__version__ = "0.1.0"

# The answer path's mypyc-compiled modules, when built and current (nettrust_core/compiled.py).
from nettrust_core import compiled as _compiled  # noqa: E402

_compiled.install()
