"""Models: embeddings, encoders, decoders, losses and the Lightning tasks that train them."""
