"""LoRA: the reference adapter, ``delta(x) = B A x`` with ``A`` (r, d_in) and ``B`` (d_out, r),
numerically PEFT's LoRA (``config.py``: :class:`LoraConfig`; ``layer.py``: :class:`LoraLayer`)."""
