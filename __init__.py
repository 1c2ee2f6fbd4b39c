"""ComfyUI entry point of the Cost-Aware Router node pack.

ComfyUI imports this folder as a package and calls ``comfy_entrypoint``. Importing it without
ComfyUI must not fail, so everything ComfyUI-specific is imported inside the entry point; the
ComfyUI-free core lives in ``cost_aware_router/``. ``WEB_DIRECTORY`` is the small frontend extension
that draws each node's report on the node (``web/cost_aware_router.js``).
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes import CostAwareRouterExtension

    return CostAwareRouterExtension()
