"""The electricity smart meter (ESME)."""
