"""brain package."""
