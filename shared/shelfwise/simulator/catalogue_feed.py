"""The simulated shop's catalogue feed: its products and their stock changes as catalogue files.

The same contract a shop's export follows (docs/catalogue.md), so the simulator's catalogue goes
through the platform's own path (``raw/catalogue/`` -> ingest -> snapshots -> bundles and
serving's live stock), and a stock change is just another, smaller file.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import datetime

import numpy as np

from shelfwise.simulator.shop import Catalogue

COLUMNS = ("item_id", "title", "category", "price", "in_stock", "brand", "updated_at")


def catalogue_csv(
    catalogue: Catalogue,
    at: datetime,
    items: Sequence[int] | np.ndarray | None = None,
    in_stock: Sequence[bool] | np.ndarray | None = None,
) -> bytes:
    """A catalogue file (CSV) of ``items`` (indices; default all) as of ``at``.

    ``in_stock`` overrides the shop's stock flags of those items (a stock change). Brands are the
    leaf category's first word: the simulator has no brands, and the column is optional.
    """
    idx = np.arange(len(catalogue)) if items is None else np.asarray(items, dtype=np.int64)
    stock = catalogue.in_stock[idx] if in_stock is None else np.asarray(in_stock, dtype=bool)
    stamp = at.isoformat().replace("+00:00", "Z")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    ids, titles, cats = catalogue.item_id, catalogue.title, catalogue.category
    for i, ok in zip(idx.tolist(), stock.tolist(), strict=True):
        brand = str(catalogue.leaf_names[catalogue.leaf[i]]).split()[0] if len(catalogue.leaf_names) else ""
        writer.writerow(
            [
                ids[i],
                titles[i],
                cats[i],
                f"{float(catalogue.price[i]):.2f}",
                "true" if ok else "false",
                brand,
                stamp,
            ]
        )
    return buf.getvalue().encode("utf-8")
