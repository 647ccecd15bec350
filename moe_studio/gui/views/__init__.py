"""One module per dashboard (a tab of the main window), and what they say about runs
they cannot show."""
