"""Device adapters: one module per vendor SDK, each importing only its own SDK."""
