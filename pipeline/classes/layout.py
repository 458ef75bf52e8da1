"""Where the custom_labels table and its publication records live, in one place.

    <output>/custom_labels/classifier=<classifier_id>/run_id=<run_id>/part-<attempt>-*.parquet
        the published rows: one Hive-style folder per classifier and scored run, so readers
        discover every classifier and run under <output>/custom_labels
    <output>/_custom_labels/classifier=<classifier_id>/<run_id>/_MANIFEST.json
        the partition's manifest (the published attempt, its files, counts, the classifier and
        the scored run's attempt); written last, as a run's
    <output>/_custom_labels/classifier=<classifier_id>/<run_id>/<attempt>/
        one apply's own folder: Beam's files, then _stats/summary.json

Publication is the runs' own (pipeline/runs/publish.py: promote, write_json_document,
retire_other_attempts) with this table's folder and manifest folder.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.runs.layout import MANIFEST_NAME, Attempt, new_attempt_id

TABLE = "custom_labels"
META_DIR = "_custom_labels"


def table_name(classifier_id: str) -> str:
    """The table folder below the output root (pipeline/runs/layout.py published_table_dir adds run_id=)."""
    return f"{TABLE}/classifier={classifier_id}"


def meta_dir(output: str, classifier_id: str, run_id: str) -> str:
    return f"{output.rstrip('/')}/{META_DIR}/classifier={classifier_id}/{run_id}"


def manifest_path(output: str, classifier_id: str, run_id: str) -> str:
    return f"{meta_dir(output, classifier_id, run_id)}/{MANIFEST_NAME}"


@dataclass(frozen=True)
class ApplyAttempt(Attempt):
    """One apply of a classifier to one run: an Attempt whose folder is under _custom_labels (its
    statistics at the inherited summary_stats_path)."""
    classifier_id: str = ""

    @classmethod
    def start(cls, output: str, run_id: str, classifier_id: str) -> "ApplyAttempt":
        return cls(output, run_id, new_attempt_id(), classifier_id)

    @property
    def root(self) -> str:
        return f"{meta_dir(self.output, self.classifier_id, self.run_id)}/{self.attempt_id}"

    @property
    def table(self) -> str:
        return table_name(self.classifier_id)
