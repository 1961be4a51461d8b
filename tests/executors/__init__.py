"""Tests of the executors (numpy reference, Core ML) and of the golden fixtures they run."""
