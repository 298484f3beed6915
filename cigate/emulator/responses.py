"""Placeholder: the Responses resource (routes + handlers) lands here."""

from starlette.routing import BaseRoute

ROUTES: list[BaseRoute] = []
