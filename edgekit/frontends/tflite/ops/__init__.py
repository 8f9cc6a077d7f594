"""TFLite operator lowerings, one module per operator family; ``registry.load_lowerings`` imports them all."""
