"""Great Expectations suite over the manifest, with results in JSON, Data Docs and plain words."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from kws_core.config import SILENCE_LABEL, UNKNOWN_LABEL, DataConfig
from kws_core.data.manifest import MANIFEST_COLUMNS
from kws_core.data.partition import PARTITIONS
from kws_core.infra.commit import atomic_outputs

# Columns and the dtype each must have in the manifest.
REQUIRED_TYPES = MANIFEST_COLUMNS


@dataclass
class Check:
    """One expectation on one derived table, with a plain-words explanation of a failure."""

    table: str
    expectation: Any
    explain: Callable[[pd.DataFrame], str]


@dataclass
class CheckOutcome:
    name: str
    table: str
    success: bool
    message: str = ""


@dataclass
class ValidationReport:
    success: bool
    outcomes: list[CheckOutcome] = field(default_factory=list)
    result_path: Path | None = None
    docs_path: Path | None = None

    @property
    def failures(self) -> list[CheckOutcome]:
        return [o for o in self.outcomes if not o.success]

    def summary_lines(self) -> list[str]:
        n = len(self.outcomes)
        if self.success:
            return [f"data quality: PASSED ({n}/{n} expectations)"]
        lines = [f"data quality: FAILED ({len(self.failures)} of {n} expectations)"]
        lines += [f"  - {o.message}" for o in self.failures]
        return lines


def derived_tables(manifest: pd.DataFrame, cfg: DataConfig) -> dict[str, pd.DataFrame]:
    """The tables the suite runs on: clips, label coverage, partition shares, leaks."""
    clips = manifest[manifest["source"] == "clip"].reset_index(drop=True)
    labels = list(cfg.wanted_word_list)
    if cfg.silence_percentage > 0:
        labels.append(SILENCE_LABEL)
    if cfg.unknown_percentage > 0:
        labels.append(UNKNOWN_LABEL)
    targets = {
        "validation": cfg.validation_percentage,
        "testing": cfg.testing_percentage,
        "training": 100.0 - cfg.validation_percentage - cfg.testing_percentage,
    }
    counts = manifest.groupby(["partition", "label"]).size()
    grid = pd.MultiIndex.from_product([[p for p in PARTITIONS if targets[p] > 0], labels])
    coverage = (
        counts.reindex(grid, fill_value=0)
        .rename_axis(["partition", "label"])
        .reset_index(name="count")
    )
    words = clips[clips["label"].isin(cfg.wanted_word_list)]
    if "origin" in words:
        # data.sources rows follow their own split (which may put a whole source in one
        # partition): the shares are data_dir's.
        words = words[words["origin"] == "data_dir"]
    total = max(len(words), 1)
    shares = pd.DataFrame(
        [
            {
                "partition": p,
                "share_pct": 100.0 * (words["partition"] == p).sum() / total,
                "target_pct": t,
            }
            for p, t in targets.items()
        ]
    )
    shares["gap_pct"] = shares["share_pct"] - shares["target_pct"]
    # Partitions are drawn per speaker, so a set with few speakers has a wide natural spread:
    # allow the configured tolerance or three binomial standard deviations, whichever is larger.
    n_speakers = max(words["speaker"].nunique(), 1)
    p = shares["target_pct"] / 100.0
    sigma_pct = 100.0 * (p * (1 - p) / n_speakers) ** 0.5
    shares["allowed_pct"] = sigma_pct.mul(3).clip(lower=cfg.partition_tolerance)
    shares["excess_pct"] = shares["gap_pct"].abs() - shares["allowed_pct"]
    people = clips[clips["speaker"] != ""][["speaker", "partition"]].drop_duplicates()
    audio = clips[["sha1", "partition"]].drop_duplicates()
    return {
        "clips": clips,
        "coverage": coverage,
        "shares": shares,
        "speaker_partitions": people.reset_index(drop=True),
        "audio_partitions": audio.reset_index(drop=True),
    }


def _where_two(df: pd.DataFrame, key: str) -> str:
    dup = df[df.duplicated(key, keep=False)].sort_values([key, "partition"])
    groups = dup.groupby(key)["partition"].apply(lambda s: " and ".join(sorted(s)))
    shown = [f"{k} ({v})" for k, v in list(groups.items())[:5]]
    more = f" and {len(groups) - 5} more" if len(groups) > 5 else ""
    return ", ".join(shown) + more


def _duration_share(df: pd.DataFrame, clip_ms: float, tol: float, mostly: float) -> str:
    share = 100 * df["duration_ms"].between(clip_ms - tol, clip_ms + tol).mean()
    return (
        f"only {share:.1f}% of clips are {clip_ms:.0f} +/- {tol:.0f} ms long "
        f"(need {100 * mostly:.0f}%)"
    )


def build_checks(cfg: DataConfig) -> list[Check]:
    import great_expectations.expectations as gxe

    clip_ms = float(cfg.clip_duration_ms)
    tol = cfg.duration_tolerance_ms
    wanted = cfg.wanted_word_list
    checks: list[Check] = [
        Check(
            "clips",
            gxe.ExpectTableColumnsToMatchSet(column_set=list(REQUIRED_TYPES), exact_match=False),
            lambda df: "manifest lacks columns: "
            + ", ".join(sorted(set(REQUIRED_TYPES) - set(df.columns))),
        )
    ]
    for col, dtype in REQUIRED_TYPES.items():
        checks.append(
            Check(
                "clips",
                gxe.ExpectColumnValuesToBeOfType(column=col, type_=dtype),
                lambda df, col=col, dtype=dtype: f"column {col} has type "
                f"{df[col].dtype if col in df else 'missing'}, expected {dtype}",
            )
        )

    def _offenders(col: str, bad: Callable[[pd.Series], pd.Series]) -> Callable:
        def explain(df: pd.DataFrame) -> str:
            rows = df[bad(df[col])]
            eg = ", ".join(
                f"{p} ({v})" for p, v in zip(rows["path"][:3], rows[col][:3], strict=False)
            )
            return f"{len(rows)} clips with unexpected {col}: {eg}"

        return explain

    checks += [
        Check(
            "clips",
            gxe.ExpectColumnValuesToBeInSet(column="sample_rate", value_set=[cfg.sample_rate]),
            _offenders("sample_rate", lambda s: s != cfg.sample_rate),
        ),
        Check(
            "clips",
            gxe.ExpectColumnValuesToBeInSet(column="channels", value_set=[1]),
            _offenders("channels", lambda s: s != 1),
        ),
        Check(
            "clips",
            gxe.ExpectColumnValuesToBeInSet(column="bits", value_set=[16]),
            _offenders("bits", lambda s: s != 16),
        ),
        Check(
            "clips",
            gxe.ExpectColumnValuesToBeBetween(column="duration_ms", max_value=clip_ms + tol),
            _offenders("duration_ms", lambda s: s > clip_ms + tol),
        ),
        Check(
            "clips",
            gxe.ExpectColumnValuesToBeBetween(
                column="duration_ms",
                min_value=clip_ms - tol,
                max_value=clip_ms + tol,
                mostly=cfg.duration_mostly,
            ),
            lambda df: _duration_share(df, clip_ms, tol, cfg.duration_mostly),
        ),
        Check(
            "clips",
            gxe.ExpectColumnValuesToBeInSet(column="label", value_set=[*wanted, UNKNOWN_LABEL]),
            _offenders("label", lambda s: ~s.isin([*wanted, UNKNOWN_LABEL])),
        ),
        Check(
            "clips",
            gxe.ExpectColumnValuesToBeInSet(column="partition", value_set=list(PARTITIONS)),
            _offenders("partition", lambda s: ~s.isin(PARTITIONS)),
        ),
        Check(
            "clips",
            gxe.ExpectColumnValuesToBeUnique(column="path"),
            lambda df: "paths listed twice: "
            + ", ".join(df["path"][df["path"].duplicated()].unique()[:5]),
        ),
        Check(
            "clips",
            gxe.ExpectColumnValuesToMatchRegex(column="sha1", regex=r"^[0-9a-f]{40}$"),
            _offenders("sha1", lambda s: ~s.astype(str).str.fullmatch(r"[0-9a-f]{40}")),
        ),
        Check(
            "clips",
            gxe.ExpectColumnValuesToBeBetween(column="peak", min_value=0.0, max_value=1.0),
            _offenders("peak", lambda s: ~s.between(0.0, 1.0)),
        ),
        Check(
            "coverage",
            gxe.ExpectColumnValuesToBeBetween(column="count", min_value=1),
            lambda df: "labels missing from a partition: "
            + ", ".join(f"{r.label} in {r.partition}" for r in df[df["count"] < 1].itertuples()),
        ),
        Check(
            "shares",
            gxe.ExpectColumnValuesToBeBetween(column="excess_pct", max_value=0.0),
            lambda df: "partition shares off target: "
            + ", ".join(
                f"{r.partition} {r.share_pct:.1f}% (target {r.target_pct:g}% "
                f"+/- {r.allowed_pct:.1f})"
                for r in df[df["excess_pct"] > 0].itertuples()
            ),
        ),
        Check(
            "speaker_partitions",
            gxe.ExpectColumnValuesToBeUnique(column="speaker"),
            lambda df: "speakers in two partitions: " + _where_two(df, "speaker"),
        ),
        Check(
            "audio_partitions",
            gxe.ExpectColumnValuesToBeUnique(column="sha1"),
            lambda df: "identical audio in two partitions (sha1): " + _where_two(df, "sha1"),
        ),
    ]
    return checks


def validate_manifest(
    manifest: pd.DataFrame, cfg: DataConfig, out_dir: Path | None = None
) -> ValidationReport:
    """Run the suite; with out_dir, write validation.json and data_docs/ there (atomically)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import great_expectations as gx

    # GX pins this module's logger to INFO: "Created temporary directory ... for ephemeral docs
    # site" on every run, a stray stderr line around kws's own one-line messages.
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    from great_expectations.checkpoint import Checkpoint, UpdateDataDocsAction
    from great_expectations.data_context.types.base import ProgressBarsConfig

    missing = sorted(set(REQUIRED_TYPES) - set(manifest.columns))
    tables = derived_tables(manifest, cfg) if not missing else {"clips": manifest}
    checks = build_checks(cfg)
    if missing:
        checks = checks[:1]

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    docs_tmp = Path(tempfile.mkdtemp(prefix="kws-gx-docs-"))
    for site, conf in dict(ctx.get_config().data_docs_sites or {}).items():
        # The ephemeral context made a temp folder for its default site; remove both.
        base = conf.get("store_backend", {}).get("base_directory")
        ctx.delete_data_docs_site(site)
        if base and Path(base).is_dir() and Path(base).name.startswith("tmp"):
            shutil.rmtree(base, ignore_errors=True)
    ctx.add_data_docs_site(
        site_name="kws",
        site_config={
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_tmp),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    source = ctx.data_sources.add_pandas("manifest")
    outcomes: list[CheckOutcome] = []
    raw: dict[str, Any] = {}
    for table in tables:
        mine = [c for c in checks if c.table == table]
        if not mine:
            continue
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe(table)
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"kws_{table}"))
        for c in mine:
            suite.add_expectation(c.expectation)
        vd = ctx.validation_definitions.add(
            gx.ValidationDefinition(name=f"kws_{table}", data=batch, suite=suite)
        )
        cp = ctx.checkpoints.add(
            Checkpoint(
                name=f"kws_{table}",
                validation_definitions=[vd],
                actions=[UpdateDataDocsAction(name="docs", site_names=["kws"])],
                result_format="SUMMARY",
            )
        )
        result = cp.run(batch_parameters={"dataframe": tables[table]})
        vres = next(iter(result.run_results.values()))
        raw[table] = vres.to_json_dict()
        by_id = {c.expectation.id: c for c in mine}
        for er in vres.results:  # GE does not keep the suite's order
            cfg_ = er.expectation_config
            check = by_id[cfg_.id]
            name = cfg_.type + (
                f"({cfg_.kwargs.get('column')})" if cfg_.kwargs.get("column") else ""
            )
            msg = "" if er.success else check.explain(tables[table])
            if not er.success and er.exception_info and er.exception_info.get("raised_exception"):
                msg = f"{name} could not run: {er.exception_info.get('exception_message')}"
            outcomes.append(CheckOutcome(name, table, bool(er.success), msg))
    if missing:
        outcomes.append(
            CheckOutcome("columns", "clips", False, "manifest lacks columns: " + ", ".join(missing))
        )
    report = ValidationReport(success=all(o.success for o in outcomes), outcomes=outcomes)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        report.result_path = out_dir / "validation.json"
        body = {
            "success": report.success,
            "summary": report.summary_lines(),
            "checks": [o.__dict__ for o in outcomes],
            "great_expectations": raw,
        }
        # compact (`dvc metrics show` prints it in one table with the others); the
        # expectation count and details are in validation.json
        metrics = {"passed": report.success, "failed": len(report.failures)}
        report.docs_path = out_dir / "data_docs"
        with atomic_outputs(out_dir, "validate") as out:  # the three replaced as one
            out.path(report.result_path).write_text(json.dumps(body, indent=2, default=str))
            out.path(out_dir / "quality_metrics.json").write_text(json.dumps(metrics, indent=2))
            shutil.copytree(docs_tmp, out.path(report.docs_path, folder=True), dirs_exist_ok=True)
    shutil.rmtree(docs_tmp, ignore_errors=True)
    return report
