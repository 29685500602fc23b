"""Update artifacts: building and signing (server side), verifying and applying (device side)."""
