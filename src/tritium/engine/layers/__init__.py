"""Building blocks of the engine's models: each a small nn.Module or function."""
