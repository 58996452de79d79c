"""Kopf handlers: decorators and thin glue only (validate → snapshot → plan → execute → status).

Importing this package registers every handler with Kopf's default registry.
"""

from pve_operator.handlers import balancing, containerpolicy, lifecycle, serverpool

__all__ = ["balancing", "containerpolicy", "lifecycle", "serverpool"]
