"""Tests of the evaluation inputs: the model-input contract, data loaders, labels, metrics and the zoo."""
