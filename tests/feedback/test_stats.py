from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import matplotlib

from bot.store import Store
from pipeline.feedback import snapshot, stats

from .conftest import ALICE, BOB, CAROL

matplotlib.use("Agg")

WEEK_7 = datetime(2025, 2, 12, tzinfo=UTC).timestamp()  # 2025-W07
WEEK_8 = datetime(2025, 2, 19, tzinfo=UTC).timestamp()


def _when(db, times: dict[int, float]) -> None:
    with sqlite3.connect(db) as c:
        c.executemany(
            "UPDATE generations SET created_at = ? WHERE id = ?", [(t, g) for g, t in times.items()]
        )


def test_votes_share_and_regeneration_rate_per_model_and_week(bot, db, tmp_path):
    bot.write(ALICE, "The ferry left without its captain.")
    first = bot.generate()
    bot.rate(first, (ALICE, 1), (BOB, 1))
    regen = bot.generate(slot=bot.slot(first))
    bot.rate(regen, (ALICE, -1), (CAROL, 1))
    later = bot.generate()
    bot.rate(later, (BOB, 1))
    other = bot.generate(model="other:7b")
    bot.rate(other, (ALICE, -1))
    bot.store.set_opt_out(CAROL.id, True)  # her vote is not counted here either
    _when(db, {first: WEEK_7, regen: WEEK_7, later: WEEK_8, other: WEEK_8})

    groups = stats.by_model_and_week(snapshot.read(db))
    assert [(g.model, g.week, g.generations, g.takes, g.regenerations, g.up, g.down) for g in groups] == [
        ("other:7b", "2025-W08", 1, 1, 0, 0, 1),
        ("writer", "2025-W07", 2, 1, 1, 2, 1),
        ("writer", "2025-W08", 1, 1, 0, 1, 0),
    ]
    other_total, writer, overall = stats.totals(groups)
    assert (writer.model, writer.regeneration_rate, writer.votes, writer.positive_share) == (
        "writer",
        0.5,
        4,
        0.75,
    )

    md, png = stats.write(snapshot.read(db), tmp_path / "out")
    text = md.read_text()
    assert "| `writer` | 3 | 1 | 0.50 | 4 | 3 | 1 | 75% |" in text
    assert "| 2025-W07 | `writer` | 2 | 1 | 1.00 | 3 | 2 | 1 | 67% |" in text
    assert "1 votes by members who opted out are not counted" in text
    assert overall.model == "all models" and overall.votes == 5 and other_total.model == "other:7b"
    image = matplotlib.pyplot.imread(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.shape[0] > 400 and image.shape[1] > 600


def test_stats_of_an_empty_database(db, tmp_path):
    Store(db).close()
    md, png = stats.write(snapshot.read(db), tmp_path)
    assert "No finished generations yet" in md.read_text()
    assert png.read_bytes()[:4] == b"\x89PNG"
