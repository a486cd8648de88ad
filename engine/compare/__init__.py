"""Several runs and what they say together: the bonus (both nets, one recipe), comparisons of any nets and seed
studies, the verdict rule, the per-class gain, the ablation of a study of three or more nets, statistics across
seeds, and the reports with their views."""
