"""Training and fine-tuning (an optional part): data sets made locally and the training loop."""
