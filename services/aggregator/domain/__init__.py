"""The aggregator's rules: the four aggregation methods, confidence, divergence, readout mitigation. No grpc."""
