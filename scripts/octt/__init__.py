"""Runs the open-source tzi-OCTT suite (github.com/tzi-app/tzi-OCTT), which plays the charging stations
of the OCA's OCTT central system cases, against this gateway: `python3 -m scripts.octt --help`."""
