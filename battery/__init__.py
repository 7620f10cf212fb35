"""The buffer battery: model, register maps and dispatch."""
