"""The agent's built-in resources package (only the base controller here)."""
