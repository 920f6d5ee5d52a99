"""The backends' rules: what a device is, how its queue behaves. No SDK and no grpc here."""
