"""The scheduler's rules: jobs and their lifecycle, the six strategies, retries. No grpc, no SQL here."""
