"""The server: every room's doors on one ASGI app, thinly.

May import every room; no room imports it.
"""

from myriad.server.app import create_app
from myriad.server.services import Services, build_services

__all__ = ["create_app", "Services", "build_services"]
