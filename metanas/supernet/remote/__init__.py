"""Model code written beside exported weights so `trust_remote_code=True` works without metanas."""
