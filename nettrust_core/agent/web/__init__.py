"""The dashboard: ``nettrust web``, a small Starlette app read-only over the statistics database.

``auth.py`` (password hashes, login sessions), ``app.py`` (routes: pages and their JSON),
``server.py`` (uvicorn, the config), ``static/`` (the pages' HTML, CSS and JS, and uPlot vendored
with its licence: nothing is loaded from another host).
"""
