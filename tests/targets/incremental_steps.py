"""Step hooks for the CLI tests of the incremental check."""


def no_pairs(model, chunk, state):
    """The recurrent model's step, which raises on a chunk of two positions (BTC chunks)."""
    if chunk.shape[1] == 2:
        raise ValueError("no chunk of two")
    return model.step(chunk, state)
