"""The operator dashboard served at ``/dashboard`` on the sidecar's port (see
docs/dashboard.md): routes (oswitch.sidecar.dashboard.routes), its pure guard
(sessions) and traffic figures (stats), and the page's files under ``static/``."""

from oswitch.sidecar.dashboard.routes import Dashboard

__all__ = ["Dashboard"]
