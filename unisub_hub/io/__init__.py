"""Reading sources and writing models: names and tensors, never math."""
