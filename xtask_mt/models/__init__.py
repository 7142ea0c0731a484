"""Network pieces: ResNet encoder, U-Net decoders, TaskTransferNets and the multi-task model."""

from xtask_mt.models.decoder import UNetDecoder
from xtask_mt.models.encoder import ENCODER_DEPTHS, ResNetEncoder
from xtask_mt.models.multitask import CrossTaskModel, TransferEdge
from xtask_mt.models.transfer import TaskTransferNet

__all__ = ["ENCODER_DEPTHS", "CrossTaskModel", "ResNetEncoder", "TaskTransferNet", "TransferEdge",
           "UNetDecoder"]
