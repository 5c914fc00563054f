"""The query list: build it from Wikipedia and WordNet (build_queries), or load an existing one (load)."""
