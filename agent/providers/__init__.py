"""LLM providers behind one seam (:mod:`agent.providers.base`)."""
