"""Asset checks: the data-quality suite, model accuracy and streaming thresholds.

Severity: ERROR blocks downstream assets (the data-quality suite) or marks a model unfit;
WARN flags a model that works but misses the target people set in params.yaml.
"""

import dagster as dg

from kws_core.steps import validate_step
from kws_core.streaming.report import read_stream_report
from kws_core.training.compare import champion_params
from kws_core.training.report import read_metrics
from pipelines.assets.data import partition_manifest
from pipelines.assets.streaming import streaming_eval_report
from pipelines.assets.training import trained_model
from pipelines.metadata import number
from pipelines.resources import KwsParams


@dg.asset_check(asset=partition_manifest, blocking=True, description="Great Expectations suite")
def manifest_expectations(kws: KwsParams) -> dg.AssetCheckResult:
    report = validate_step(kws.load())
    record = kws.commit("validate") if report.success else None
    failures = [f"{o.name}: {o.message}" if o.message else o.name for o in report.failures][:3]
    return _result(
        passed=report.success,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"all {len(report.outcomes)} expectations met"
            if report.success
            else f"{len(report.failures)} of {len(report.outcomes)} expectations failed: "
            + "; ".join(failures)
        ),
        metadata={
            "summary": dg.MetadataValue.md("\n".join(f"- {x}" for x in report.summary_lines())),
            "expectations": len(report.outcomes),
            "failed": len(report.failures),
            "data_docs": dg.MetadataValue.path(str(report.docs_path / "index.html")),
            "dvc": record.data_version or record.note if record else "not committed (failed)",
        },
    )


def _result(passed: bool, severity, description: str, metadata: dict) -> dg.AssetCheckResult:
    """The check's verdict in words twice: as its description and as the first metadata entry,
    plain text, which the run's event log shows without a click."""
    return dg.AssetCheckResult(
        passed=passed,
        severity=severity,
        description=description,
        metadata={"verdict": dg.MetadataValue.text(description), **metadata},
    )


def _verdict(what: str, passed: bool, severity, warn: str, fail: str, side: str) -> str:
    """One line: the value, and the limit it crossed (or that it is within both)."""
    if passed:
        return f"{what}: within the limits (warn {side} {warn})"
    limit = fail if severity == dg.AssetCheckSeverity.ERROR else warn
    return f"{what} is {side} {limit}"


def _grade(value: float, warn: float, fail: float, higher_is_better: bool):
    """(passed, severity) for a value against warn/fail limits."""
    bad = (lambda v, lim: v < lim) if higher_is_better else (lambda v, lim: v > lim)
    if bad(value, fail):
        return False, dg.AssetCheckSeverity.ERROR
    if bad(value, warn):
        return False, dg.AssetCheckSeverity.WARN
    return True, dg.AssetCheckSeverity.WARN


@dg.asset_check(asset=trained_model, description="champion test accuracy vs checks.*_test_accuracy")
def model_accuracy(kws: KwsParams) -> dg.AssetCheckResult:
    params = kws.load()
    chosen = champion_params(params)
    acc = float(read_metrics(chosen)["test_accuracy"])
    t = params.checks
    passed, severity = _grade(acc, t.warn_test_accuracy, t.fail_test_accuracy, True)
    return _result(
        passed=passed,
        severity=severity,
        description=_verdict(
            f"test accuracy {100 * acc:.1f}%",
            passed,
            severity,
            f"{100 * t.warn_test_accuracy:.0f}% (checks.warn_test_accuracy)",
            f"{100 * t.fail_test_accuracy:.0f}% (checks.fail_test_accuracy)",
            "below",
        ),
        metadata={
            "test_accuracy": number(acc),
            "warn_below": t.warn_test_accuracy,
            "fail_below": t.fail_test_accuracy,
        },
    )


@dg.asset_check(
    asset=streaming_eval_report,
    description="false-reject rate vs checks.*_false_reject_rate; FA/h vs target_fa_per_hour",
)
def streaming_thresholds(kws: KwsParams) -> dg.AssetCheckResult:
    params = kws.load()
    s = params.stream
    report = read_stream_report(params)
    frr = report["keyword_stream"]["false_reject_rate"]
    fa = report["negative_stream"]["false_accepts_per_hour"]
    c = params.checks
    passed, severity = _grade(
        1.0 if frr is None else frr, c.warn_false_reject_rate, c.fail_false_reject_rate, False
    )
    bad_frr, frr_severity = not passed, severity
    notes = []
    if fa > s.target_fa_per_hour:
        notes.append(
            f"{fa:.1f} false accepts/hour at detection_threshold {s.detection_threshold} is above "
            f"the {s.target_fa_per_hour} target (threshold for the target: "
            f"{report['target']['threshold']})"
        )
        if passed:
            passed, severity = False, dg.AssetCheckSeverity.WARN
    frr_line = _verdict(
        "false-reject rate " + ("n/a (no keywords)" if frr is None else f"{100 * frr:.1f}%"),
        not bad_frr,
        frr_severity,
        f"{100 * c.warn_false_reject_rate:.0f}% (checks.warn_false_reject_rate)",
        f"{100 * c.fail_false_reject_rate:.0f}% (checks.fail_false_reject_rate)",
        "above",
    )
    return _result(
        passed=passed,
        severity=severity,
        description="; ".join([frr_line, *notes]),
        metadata={
            "false_reject_rate": number(1.0 if frr is None else frr),
            "false_accepts_per_hour": number(fa),
        },
    )
