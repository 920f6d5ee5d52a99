"""The network service's rules: how the network's status and metrics are derived. No grpc here."""
