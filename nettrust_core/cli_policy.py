"""``nettrust explain`` and ``nettrust lists update``: the policy verbs (no firewall, no resolver)."""

from __future__ import annotations

import contextlib
import json
import os
import sys

from .config import load_config
from .durations import format_duration


def cmd_lists_update(args) -> int:
    from .lists.update import format_change, update
    config = load_config(args.config)
    p = config.policy
    if not p.lists:
        print(f"{args.config}: no [[policy.lists]] configured")
        return 0
    with _progress(args.json) as progress:
        changes = update(p.lists, p.lists_state, save=not args.no_save, progress=progress)
    if args.json:
        print(json.dumps([c.as_dict() for c in changes], indent=2))
    else:
        for change in changes:
            for line in format_change(change, args.verbose):
                print(line)
        interval = p.lists_check_interval
        print(f"the running resolver reloads changed files by itself within "
              f"{format_duration(interval)}" if interval else
              "policy.lists_check_interval = 0: restart Unbound to apply the changes")
    failed = any(c.error for c in changes) or (args.strict and any(c.invalid for c in changes))
    return 1 if failed else 0


@contextlib.contextmanager
def _progress(quiet: bool):
    """A progress bar on stderr (rich, when installed and stderr is a terminal)."""
    try:
        if quiet or not sys.stderr.isatty():
            raise ImportError
        from rich.progress import Progress, TaskID
    except ImportError:
        yield None
        return
    tasks: dict[str, TaskID] = {}
    with Progress(transient=True, console=None) as bar:
        def step(path: str, done: int, total: int) -> None:
            if path not in tasks:
                tasks[path] = bar.add_task(os.path.basename(path), total=total or 1)
            bar.update(tasks[path], completed=done)
        yield step


def cmd_explain(args) -> int:
    from .answer import normalize
    from .lists import loader_for
    from .policy import Policy
    config = load_config(args.config)
    index, reports = loader_for(config).load()
    for r in reports:
        if r.error:
            print(f"nettrust: list {r.list}: {r.path}: {r.error}", file=sys.stderr)
    check = Policy(config, index).check_name(normalize(args.name))
    verdict = "ALLOWED" if check.allowed else "BLOCKED"
    rule = f" (rule {check.rule})" if check.rule else ""
    print(f"{args.name}: {verdict} — {check.reason}{rule} [{config.mode} mode]")
    if not check.allowed:
        from .lists.bypass import is_canary
        answer = "nxdomain" if is_canary(check.name or "") else config.policy.blocked_answer
        print(f"clients get: {answer}; the query never goes upstream")
    return 0 if check.allowed else 1
