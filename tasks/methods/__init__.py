"""Retrieval methods: the registry, the method grammar and the searcher that runs them."""
