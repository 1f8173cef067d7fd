"""Run by tests/test_distributed.py under torchrun: train, then every rank saves the adapter
weights it holds, so the test can check that data parallelism kept them identical."""

import sys

import torch
from safetensors.torch import save_file
from transformers import TrainerCallback

from qpeft.train import TrainConfig, train


class SaveRankWeights(TrainerCallback):
    def __init__(self, out):
        self.out = out

    def on_train_end(self, args, state, control, model=None, **kwargs):
        weights = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        save_file(weights, f"{self.out}/rank{rank}.safetensors")


if __name__ == "__main__":
    config = TrainConfig.from_file(sys.argv[1])
    train(config, callbacks=[SaveRankWeights(config.out)])
