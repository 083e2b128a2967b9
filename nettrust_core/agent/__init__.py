"""The NetTrust agent: statistics, metrics and alerts, in a process of their own.

Unbound's answer path only *sends*: its dnstap stream (every client response, cache hits and
local data included) and the module's decision records (:mod:`nettrust_core.report`).  This
package receives both, joins them into one record per query, keeps them in SQLite, serves
Prometheus metrics and runs the alert rules — so none of that work, and no disk or network wait,
ever happens on a resolver thread.  ``nettrust agent`` runs it in the foreground.
"""
