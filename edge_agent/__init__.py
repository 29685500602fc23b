"""The Nigehbaan edge agent: the asyncio program that runs on every node."""
