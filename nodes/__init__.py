"""ComfyUI nodes of the Cost-Aware Router pack (V3 schema). Thin: all logic is in the core package."""

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from .candidates import CandidateNode
from .export import ExportTableNode
from .extend import AddCandidateNode, AnchorPromptsNode
from .feedback import RouterFeedbackNode
from .measure import MeasureCostsNode
from .pool import CandidatePoolNode
from .route import CostAwareRouterNode
from .save import SaveScoredGenerationNode
from .schema import register_folders
from .scorer import QualityScorerNode
from .sweep import CandidateSweepNode
from .train import TrainRouterNode
from .verify import EscalationPlanNode, VerifyEscalateNode


class CostAwareRouterExtension(ComfyExtension):
    @override
    async def on_load(self) -> None:
        register_folders()

    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [CandidateNode, CandidatePoolNode, CostAwareRouterNode, TrainRouterNode, QualityScorerNode,
                MeasureCostsNode, CandidateSweepNode, SaveScoredGenerationNode, AnchorPromptsNode, AddCandidateNode,
                RouterFeedbackNode, EscalationPlanNode, VerifyEscalateNode, ExportTableNode]
