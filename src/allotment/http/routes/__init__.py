"""One module per resource; each exposes ``ROUTES``."""
