"""One small interface per hardware capability, with real and simulated backends."""
