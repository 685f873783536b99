"""Product popularity: the top products by views and by cart adds in each 5-minute window.

Shards hold visitors, not products, so each shard sends its full per-product counts of a window
(bounded by the products its visitors touched) and the merge step ranks the sums exactly.
"""

from __future__ import annotations

from shoplake.core.speed.rows import TopProduct
from streaming.events import LiveEvent
from streaming.windows import WINDOW_5M, Partial, ShardLogic, TumblingWindower, window_bounds

RANKED = {"product_view": 0, "add_to_cart": 1}
RANKINGS = ("views", "add_to_carts")


class TopProductsLogic(ShardLogic):
    """Stage 1: per-shard product counts of each open 5-minute window."""

    mark_every: TumblingWindower = WINDOW_5M

    def initial_state(self) -> dict:
        return {"windows": {}}

    def on_event(self, e: LiveEvent, wm: int) -> list:
        slot = RANKED.get(e.event_type)
        if slot is None or e.product_id is None:
            return []
        start = WINDOW_5M.start_ms(e.event_ms)
        if start + WINDOW_5M.length_ms <= wm:
            return []  # late: counted in late_events by the metrics step
        counts = self.s["windows"].setdefault(start, {})
        c = counts.get(e.product_id)
        if c is None:
            c = counts[e.product_id] = [0, 0]
        c[slot] += 1
        return []

    def flush(self, wm: int) -> list:
        windows = self.s["windows"]
        closed = sorted(k for k in windows if k + WINDOW_5M.length_ms <= wm)
        return [Partial(k, {p: tuple(c) for p, c in windows.pop(k).items()}) for k in closed]

    def close_all(self) -> list:
        return self.flush(2**62)


def merge_products(acc: dict | None, counts: dict) -> dict:
    if acc is None:
        return dict(counts)
    for pid, (v, a) in counts.items():
        old = acc.get(pid)
        acc[pid] = (v, a) if old is None else (old[0] + v, old[1] + a)
    return acc


def finish_top(top_n: int):
    def finish(start_ms: int, acc: dict) -> list[TopProduct]:
        start, end = window_bounds(WINDOW_5M, start_ms)
        rows = []
        for slot, ranking in enumerate(RANKINGS):
            ranked = sorted(((-c[slot], pid) for pid, c in acc.items() if c[slot] > 0))[:top_n]
            rows.extend(
                TopProduct(
                    window_start=start,
                    window_end=end,
                    ranking=ranking,
                    rank=i + 1,
                    product_id=pid,
                    count=-neg,
                )
                for i, (neg, pid) in enumerate(ranked)
            )
        return rows

    return finish
