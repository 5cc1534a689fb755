"""The catalogue contract between the ingest (which writes it) and serving (which reads it).

A neutral module, like ``events.py`` and ``served_lists.py``: the catalogue ingest and serving both
import it, so neither reaches into the other. The formats are in docs/catalogue.md.
"""

# The serving snapshot of live stock and prices the catalogue ingest keeps current (stock.npz).
CATALOGUE_STOCK_KEY = "curated/catalogue/serving/stock.npz"
