"""Code shared by every qnet service: settings, logging, errors, auth, storage and the gRPC bootstrap."""
