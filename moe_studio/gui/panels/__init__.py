"""The side panels of the main window: the experiment setup form and the runs list."""
