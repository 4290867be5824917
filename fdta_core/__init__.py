"""FDTA core library: every piece of logic of the ComfyUI-FDTA pack, usable without ComfyUI.

Nothing in this package may import ComfyUI (``comfy``, ``comfy_api``, ``folder_paths``, ``server``,
``nodes``); the node pack in ``nodes/`` is a thin layer on top of it.
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
