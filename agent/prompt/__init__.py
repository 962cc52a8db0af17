"""What the model is shown: token estimates, history fitting and repair, the window cache, compaction
and the builder of each turn's prompt (system prompt + history window)."""
