"""Several runs and what they say together: the bonus (both nets, one recipe), comparisons of any nets and seed
studies (plan.py, grid.py, dealing.py), the verdict rule (verdict.py), the per-class gain, the ablation of a study of
three or more nets (ablation.py), statistics across seeds, and the reports (report.py) and how they look (render.py)."""
