"""The sequence recommender (model v2): a shared text sequence model and each platform's personal model."""
