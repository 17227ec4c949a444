"""In-process LiteLLM providers: model strings ``name/...`` answered by a handler in this process.

The bundled local model (:mod:`tasks.llm.local`) and the tests' fake LLM register here, so that
:class:`~tasks.llm.client.LLMClient` calls them through LiteLLM's routing like any hosted model.
"""

from __future__ import annotations

import os
from typing import Any


def register_provider(name: str, handler: Any) -> None:
    """Route model strings ``name/...`` to an in-process LiteLLM ``CustomLLM`` (idempotent)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no cost-map download at import
    import litellm

    others = [p for p in litellm.custom_provider_map if p["provider"] != name]
    litellm.custom_provider_map = [*others, {"provider": name, "custom_handler": handler}]
    litellm.utils.custom_llm_setup()  # rebuilds LiteLLM's provider list from the map
