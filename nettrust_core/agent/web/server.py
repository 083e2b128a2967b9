"""``nettrust web``: the dashboard served by uvicorn, as the configuration says."""

from __future__ import annotations

import logging

from ...errors import ConfigError

log = logging.getLogger("nettrust.web")


def serve(config) -> None:
    """Run in the foreground until SIGINT/SIGTERM."""
    web = config.web
    if not web.enabled:
        raise ConfigError("the dashboard is off: set enabled = true under [web] (with "
                          "password_hash from `nettrust web --hash-password`, or auth = \"proxy\")",
                          file=config.path, key="web.enabled", line=config.line_of("web.enabled"))
    import uvicorn

    from .app import create_app
    app = create_app(config.stats.database, password_hash=web.password_hash,
                     proxy=web.auth == "proxy")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s nettrust web: %(message)s")
    log.info("dashboard on http://%s/ (auth: %s), reading %s", web.listen, web.auth,
             config.stats.database)
    uvicorn.run(app, host=web.listen.address, port=web.listen.port, log_level="warning",
                access_log=False, proxy_headers=False, server_header=False)
