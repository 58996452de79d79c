"""The operator's Kubernetes API: versioned pydantic models that are the single source of the CRDs.

``pve_operator.api.v1alpha1`` holds the models of ``ProxmoxServerPool`` and ``ContainerPolicy``
(group ``pve.ctoperator.io``); ``pve_operator.api.crdgen`` turns them into ``crds/*.yaml``
(``make crds``). This package is the bottom layer: it imports nothing else from the operator and no
Kubernetes, Kopf or Proxmox client.
"""
