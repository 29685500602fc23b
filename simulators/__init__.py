"""Whole fleets without hardware: real edge-agent code on simulated hardware."""
