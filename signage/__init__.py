"""Bay lights: the rules that decide each light, and the light commands sent to fixtures."""
