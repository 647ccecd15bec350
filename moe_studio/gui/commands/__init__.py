"""Command-line tools that render the app's views offscreen (report, screenshots)."""
