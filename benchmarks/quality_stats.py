"""Per-seed statistics of the quality study's cells: the metrics of a cell, mean +- std over
seeds, and paired comparisons across seeds (``quality_report.py`` and ``quality_sections.py``)."""

from __future__ import annotations

import math
import statistics

# two-sided 95 % quantiles of Student's t for n - 1 degrees of freedom (paired tests over seeds)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def metrics(record: dict) -> dict:
    """The study's metrics of one finished main cell."""
    out = {
        "final_train_loss": record["final_train_loss"],
        "heldout_loss": record["eval"]["eval_loss"],
        "accuracy": record["eval"].get("accuracy"),
        "seconds_per_step": record["seconds_per_step"],
    }
    test = record.get("gsm8k_test")
    if test:
        out["heldout_loss"] = test["test_loss"]  # GSM8K: its own test file
        out["accuracy"] = test.get("test_accuracy")
    return out


def mean_std(values: list[float]) -> tuple[float, float] | None:
    """(mean, std) of the values that are not None (std 0 for one value); None if none is."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(pair, digits: int = 4) -> str:
    """``mean +- std`` of a :func:`mean_std` pair ('n/a' for None)."""
    if pair is None:
        return "n/a"
    mean, std = pair
    return f"{mean:.{digits}f} +- {std:.{digits}f}"


def paired(a: dict[int, dict], b: dict[int, dict], key: str) -> dict | None:
    """a - b per common seed: mean, std, the relative change of the means, the paired t
    statistic, whether it is significant at 95 %, and whether |mean| exceeds the larger of
    the two methods' seed-to-seed standard deviations."""
    seeds = sorted(set(a) & set(b))
    pairs = [(metrics(a[s])[key], metrics(b[s])[key]) for s in seeds]
    pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
    if not pairs:
        return None
    diffs = [x - y for x, y in pairs]
    mean_a, mean_b = statistics.mean(x for x, _ in pairs), statistics.mean(y for _, y in pairs)
    result = {
        "seeds": len(pairs),
        "mean_diff": statistics.mean(diffs),
        "relative": (mean_a - mean_b) / abs(mean_b) if mean_b else None,
        "diffs": diffs,
    }
    if len(pairs) > 1:
        sd = statistics.stdev(diffs)
        spread = max(statistics.stdev([x for x, _ in pairs]), statistics.stdev([y for _, y in pairs]))
        if sd > 0:
            t = result["mean_diff"] / (sd / math.sqrt(len(pairs)))
        else:  # identical differences in every seed: no spread to test against
            t = math.copysign(math.inf, result["mean_diff"]) if result["mean_diff"] else 0.0
        result.update(
            std_diff=sd,
            t=t,
            significant_95=abs(t) > T95.get(len(pairs) - 1, 1.96),
            exceeds_seed_spread=abs(result["mean_diff"]) > spread,
        )
    return result
