"""Training across processes on ``torch.distributed`` (launched by ``torchrun``)."""
