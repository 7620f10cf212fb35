"""The square daemon: the cycle, the pure power-sharing core, persistence, the CLI and console."""
