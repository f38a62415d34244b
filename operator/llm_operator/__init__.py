"""triton-llm-operator: one LLMDeployment in, a production LLM service on Triton out."""

__version__ = "0.1.0"

GROUP = "serving.llmops.dev"
VERSION = "v1alpha1"
PLURAL = "llmdeployments"
KIND = "LLMDeployment"
FIELD_MANAGER = "triton-llm-operator"

__all__ = ["FIELD_MANAGER", "GROUP", "KIND", "PLURAL", "VERSION", "__version__"]
