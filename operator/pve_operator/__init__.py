"""pve-operator: a Kopf operator that manages Proxmox VE LXC containers from Kubernetes objects.

Layers (enforced by import-linter, see pyproject.toml): handlers > execution > pve > planning > api.
"""

__version__ = "0.1.0"
