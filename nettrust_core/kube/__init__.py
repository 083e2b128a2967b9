"""Kubernetes: the CRDs, the pure renderers, the NetworkPolicy-mode desired state, the operator.

Everything here except :mod:`.operator` is plain Python over dictionaries: the CRDs
(:mod:`.crds`), what an ``EgressPolicy`` or ``AgentPool`` becomes (:mod:`.render`), which granted
addresses a policy's workloads may reach (:mod:`.desired`) and where grants come from
(:mod:`nettrust_core.grant_feed`). :mod:`.operator` holds the thin kopf handlers over them and is imported only by
``nettrust operator`` — the resolver and the agent never import kopf or the kubernetes client
(the ``nettrust[operator]`` extra).
"""
