"""Triton python-backend LLM runtime: model repository generator, engine, OpenAI front and `llmctl serve`.

Importing this package is cheap: torch, transformers and tritonclient are imported only by the modules
that need them, so the operator can use :mod:`llm_runtime.repository` without the runtime extra.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
