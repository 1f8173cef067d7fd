"""qpeft."""
