"""The adapted model still works with generate() and transformers.Trainer."""

import pytest
import torch

from qpeft.adapters import get_model
from qpeft.testing import TINY_TARGETS, tiny_causal_lm


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_generate(kind):
    model = get_model(tiny_causal_lm(kind), "qtha-default", r=4, target_modules=TINY_TARGETS[kind])
    ids = torch.tensor([[1, 2, 3, 4]])
    out = model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False, pad_token_id=0
    )
    assert out.shape == (1, 9) and torch.equal(out[:, :4], ids)


def test_trainer_trains_only_the_adapter(tmp_path):
    import transformers as tf

    class Tokens(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            ids = torch.randint(0, 96, (12,), generator=torch.Generator().manual_seed(i))
            return {"input_ids": ids, "labels": ids}

    model = get_model(tiny_causal_lm("llama"), "qtha-default", r=4, target_modules=TINY_TARGETS["llama"])
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    trained = {n: p.clone() for n, p in model.named_parameters() if p.requires_grad}
    args = tf.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        use_cpu=True,
        disable_tqdm=True,
    )
    result = tf.Trainer(model=model, args=args, train_dataset=Tokens()).train()
    assert result.global_step == 3 and result.training_loss > 0
    for n, p in model.named_parameters():
        if p.requires_grad:  # three steps move every factor (the zero last core moves first)
            assert not torch.equal(p, trained[n]), n
        else:
            assert torch.equal(p, frozen[n]), n
