"""The OpenAI-compatible HTTP sidecar (``oswitch serve``)."""

from oswitch.sidecar.app import SidecarApp
from oswitch.sidecar.serve import run_gateway, serve_sidecar

__all__ = ["SidecarApp", "run_gateway", "serve_sidecar"]
