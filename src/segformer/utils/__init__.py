"""Small helpers shared by every layer (no model, data or CLI knowledge)."""
