"""The text encoder (frozen BERT with LoRA), its inputs and caches, and the models on top."""
