"""Run by tests/test_distributed.py under torchrun: train two steps; before each, rank 0 saves
the adapter, and every rank saves the batch it saw and the gradient it applied, so the test
can compare the all-reduced gradient with one process on the union of the ranks' batches
(step 1 from the fresh adapter, step 2 from a trained one, where every factor has a gradient)."""

import sys

import torch
from safetensors.torch import save_file
from transformers import TrainerCallback

from qpeft.train import TrainConfig, train


class SaveSteps(TrainerCallback):
    def __init__(self, out):
        self.out, self.batch = out, None

    def _rank(self) -> int:
        return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        def keep_batch(module, args, kwargs):
            if self.batch is None:
                self.batch = {k: kwargs[k].detach().cpu() for k in ("input_ids", "labels", "attention_mask")}

        model.register_forward_pre_hook(keep_batch, with_kwargs=True)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self.batch = None
        if self._rank() == 0:
            model.save_adapter(f"{self.out}/step{state.global_step + 1}_init")

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        # gradients all-reduced (and clipped), not yet applied
        prefix = f"{self.out}/step{state.global_step + 1}_rank{self._rank()}"
        grads = {n: p.grad.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(grads, f"{prefix}_grad.safetensors")
        save_file(self.batch, f"{prefix}_batch.safetensors")


if __name__ == "__main__":
    config = TrainConfig.from_file(sys.argv[1])
    train(config, callbacks=[SaveSteps(config.out)])
