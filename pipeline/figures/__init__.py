"""Matplotlib figures (PNG). Imported only by the stages that draw (generate's preview, compare), so the others
never pay for matplotlib."""
