"""Serve a registered model's Production version and follow its promotions (SPEC section 9)."""

from registry.serving.model import NoModelLoaded, ServedModel

__all__ = ["NoModelLoaded", "ServedModel"]
