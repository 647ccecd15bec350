"""The building blocks the views and panels are made of: figures (curves, heatmaps,
bars, bands) and their axes and labels, routed text, status lines, dialogs."""
