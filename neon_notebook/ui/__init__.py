"""The notebook views: status text and widget, progress bars, and the %neon / %%sql magics."""
