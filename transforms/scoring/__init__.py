"""Label selection, window-to-clip aggregation and table rows: plain Python and numpy, no Apache Beam."""
