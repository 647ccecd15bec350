"""Sweeps: a grid of experiments run as a queue persisted in a sweep folder
(``grid``: parse and expand; ``queue``: the folder and its queue file; ``runner``: the
processes). Never Qt; torch only in the runs' own processes."""
