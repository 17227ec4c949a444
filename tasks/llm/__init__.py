"""The LLM layer: the LiteLLM client with failover, the bundled local model, and relevance judges."""
