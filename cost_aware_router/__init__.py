"""Cost-aware routing for text-to-image generation (arXiv 2506.14753), ComfyUI-free core.

For each prompt, predict every candidate's quality and pick
``argmax(predicted quality - cost_weight * cost)``. Shared by the CLI and the ComfyUI nodes.
"""

__version__ = "0.1.0"

from .errors import DataError, RouterError, RouterFileError  # noqa: E402,F401
