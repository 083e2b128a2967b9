"""Cloud plugins: granted addresses reconciled into a cloud firewall object, in batches.

A plugin is a :class:`~.sink.CloudSink` (one method that makes the cloud's object hold a given set
of addresses); :class:`~.sink.CloudReconciler` is the loop every plugin shares: every interval it
reads the live grants, applies the minimum lifetime and the cap, and hands the desired set to the
sink — never one API call per DNS answer. :mod:`.aws` keeps an AWS managed prefix list (referenced
by a security-group egress rule). A GCP or Azure sink implements the same protocol.
"""
