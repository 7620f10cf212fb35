"""The square's configuration: pydantic schema, TOML loading with file/line errors, examples."""
