"""Network pieces: trunks and heads of each architecture, transfer nets, the multi-task model."""

from xtask_mt.models.decoder import DECODER_BIASES, UNetDecoder
from xtask_mt.models.encoder import ENCODER_DEPTHS, ResNetEncoder
from xtask_mt.models.multitask import CrossTaskModel, TransferEdge
from xtask_mt.models.transfer import TRANSFER_ARCHS, TaskTransferNet, UNetTransferNet

__all__ = ["DECODER_BIASES", "ENCODER_DEPTHS", "TRANSFER_ARCHS", "CrossTaskModel", "ResNetEncoder",
           "TaskTransferNet", "TransferEdge", "UNetDecoder", "UNetTransferNet"]
