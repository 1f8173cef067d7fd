"""qpeft: hybrid quantum-classical parameter-efficient fine-tuning for Hugging Face causal LMs."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # The adapter API imports transformers: only when asked for, so `import qpeft` stays fast.
    if name in {
        "get_model",
        "load_adapter",
        "save_adapter",
        "preset",
        "LoraConfig",
        "MPOConfig",
        "QTHAConfig",
    }:
        import qpeft.adapters as adapters

        return getattr(adapters, name)
    raise AttributeError(f"module 'qpeft' has no attribute {name!r}")
