"""flageval-operator: evaluate LLM services across chips against an NVIDIA baseline."""

__version__ = "0.1.0"
