"""The main window's parts, one idea each; ``gui.main_window`` puts them together."""
