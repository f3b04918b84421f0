"""Evaluation on top of generation: needle-in-a-haystack (more tasks come with the eval issue)."""
