"""Automatic number-plate recognition on the node: detectors, readers, country format rules."""
