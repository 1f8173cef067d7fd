"""QTHA, Quantum Tensor Hybrid Adaptation: MPO down-projection -> quantum circuit (or a
classical control branch) on the r bottleneck features -> MPO up-projection (``config.py``:
:class:`QTHAConfig`; ``layer.py``: :class:`QTHALayer`)."""
