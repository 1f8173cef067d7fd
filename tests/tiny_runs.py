"""The small `qtha-weights` training run the job-engine and tracking tests send through a
provider or a tracker: a tiny random Llama (``qpeft.testing.tiny_model_dir``), 3 steps of 4
arithmetic examples, 4 quantum modules (q_proj and v_proj of 2 layers)."""

from qpeft.train import TrainConfig


def tiny_run_config(model_dir, out, **fields) -> TrainConfig:
    """The run's settings, writing to ``out``; ``fields`` override them (e.g. the backend)."""
    defaults = dict(
        model=str(model_dir),
        data="arithmetic:1",
        method="qtha-weights",
        adapter={"r": 4, "bond_dim": 2, "qnn_layers": 1},
        out=str(out),
        steps=3,
        batch_size=4,
        max_examples=12,
        max_length=64,
        save_steps=100,
        eval_examples=2,
        lr=2e-2,
        progress=False,
    )
    return TrainConfig(**{**defaults, **fields})
