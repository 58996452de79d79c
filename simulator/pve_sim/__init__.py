"""pve_sim: a Proxmox VE API simulator with a load model.

It speaks the PVE 9.x REST API over HTTPS (tickets, API tokens, CSRF, UPID tasks, config locks, PVE's
error codes and messages) and adds what no real PVE offers: node capacity and CT usage profiles over
a controllable clock, scenarios, fault injection and time scaling. It is a product in its own right
(the demo's embedded default and the test backend); `pve_operator` never imports it.
"""

__version__ = "0.1.0"
