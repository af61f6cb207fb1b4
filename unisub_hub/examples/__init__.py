"""Built-in example collections made locally at first use (no internet): LoRA adapters of
all-MiniLM-L6-v2 on small text tasks, and a zoo of digit classifiers trained from scratch."""
