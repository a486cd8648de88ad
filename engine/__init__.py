"""What a run does: one training run at this level (build, outputs, session, resume, run directories, precision,
devices, re-testing a checkpoint), the data in `engine.data`, several runs and their analysis in `engine.compare`."""
