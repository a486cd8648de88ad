"""Ignite handlers, each attaching itself to an engine: the epoch loss, evaluation, history, checkpoints,
TensorBoard, progress, interrupts, and when the comparison report is written."""
