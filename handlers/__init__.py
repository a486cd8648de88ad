"""Ignite handlers, each attaching itself to an engine: the epoch loss, evaluation, history, checkpoints,
TensorBoard, progress, interrupts, the learning-rate schedule, the average of the weights, and when the comparison
report is written."""
