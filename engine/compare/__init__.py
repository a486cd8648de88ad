"""Several runs and what they say together: the bonus (both nets, one recipe) and seed studies, the verdict rule,
the per-class gain, statistics across seeds, and the reports with their views."""
