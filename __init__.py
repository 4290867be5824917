"""ComfyUI-FDTA: ComfyUI entry point.

ComfyUI imports this file from ``custom_nodes/``; it registers the V3 nodes through
:func:`comfy_entrypoint`. All logic lives in ``fdta_core`` (importable without ComfyUI); ``nodes/``
holds the thin node wrappers. ``NODE_CLASS_MAPPINGS`` is deliberately not exported: ComfyUI would then
ignore the V3 entry point.
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes import FDTAExtension

    return FDTAExtension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
