"""NetTrust's lab: throw-away network namespaces with authoritative DNS, for tests and the sandbox.

``with Lab() as lab: ...`` — see :mod:`testbed.lab`.
"""

from .errors import LabCommandError, LabError
from .lab import Lab, cleanup_stale, missing_prerequisites
from .process import LabProcess

__all__ = ["Lab", "LabCommandError", "LabError", "LabProcess", "cleanup_stale", "missing_prerequisites"]
