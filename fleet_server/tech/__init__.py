"""Technician tools: first-boot bundles, registration and the commissioning checklist."""
