"""MPO adapter: both factors of the delta are matrix product operators (tensor trains),
``delta(x) = B A x`` contracted core by core (``config.py``: :class:`MPOConfig`; ``layer.py``:
:class:`MPOLayer`; ``tensor_train.py``: the tensor train itself)."""
