"""The Flower ClientApp of fedrec (``clients/app.py``)."""
