"""The CLI's pure parts: the exit-code table, the histogram, the parser."""

from __future__ import annotations

import io

from qnet_client import cli, errors, models


def test_every_documented_error_code_has_an_exit_code_and_help_prints_the_table():
    for code in errors.CLASSES:
        assert code in cli.EXIT_OF_CODE, code
    assert cli.exit_code_of(errors.error_for("UNAUTHENTICATED", 401, "x")) == cli.AUTH
    assert cli.exit_code_of(errors.error_for("BACKEND_NOT_FOUND", 404, "x")) == cli.NOT_FOUND
    assert cli.exit_code_of(errors.ConnectionFailed("refused")) == cli.UNAVAILABLE
    assert cli.exit_code_of(errors.error_for("BRAND_NEW", 500, "x")) == cli.INTERNAL
    out = io.StringIO()
    assert cli.main(["--help"], out=out) == cli.OK
    text = out.getvalue()
    for exit_code, meaning, _ in cli.EXIT_CODES:
        assert f"  {exit_code:<4} {meaning}" in text


def test_the_histogram_scales_bars_to_the_largest_count_in_bitstring_order():
    lines = cli.histogram({"11": 256, "00": 512, "01": 0}, width=8)
    assert [line.split()[0] for line in lines] == ["00", "01", "11"]
    assert lines[0].count("█") == 8 and lines[2].count("█") == 4 and "█" not in lines[1]
    assert lines[0].rstrip().endswith("66.7%") and " 256 " in lines[2]


def test_the_histogram_shows_the_most_frequent_outcomes_and_says_how_many_are_left():
    counts = {format(i, "06b"): i + 1 for i in range(64)}
    lines = cli.histogram(counts, width=10, limit=4)
    assert len(lines) == 5 and lines[-1].startswith("  ... 60 more outcomes")
    assert [line.split()[0] for line in lines[:4]] == ["111100", "111101", "111110", "111111"]


def test_a_job_of_strategy_all_shows_each_backend_and_the_aggregate():
    job = models.Job(job_id="net_job_1", status="completed", strategy="all", shots=4, results=[
        models.BackendRun(backend="a", status="completed", counts={"0": 4}),
        models.BackendRun(backend="b", status="failed", error=models.JobError("BACKEND_EXECUTION_ERROR", "boom"))],
        aggregated_counts={"0": 4}, aggregation_method="median", aggregation_confidence=0.5)
    text = "\n".join(cli.describe_job(job))
    assert "a: completed" in text and "b: failed (BACKEND_EXECUTION_ERROR: boom)" in text
    assert "aggregated (median, confidence 0.500)" in text


def test_options_may_come_before_or_after_the_command():
    for argv in (["--json", "--key", "k", "status"], ["status", "--json", "--key", "k"]):
        args = cli.parser().parse_args(argv)
        assert args.json is True and args.key == "k" and args.command == "status"


def test_bad_usage_exits_2_without_a_traceback():
    err = io.StringIO()
    assert cli.main(["execute"], out=io.StringIO(), err=err) == cli.USAGE
    assert cli.main(["backends", "--queue", "--key", "k"], out=io.StringIO(), err=err) == cli.USAGE
    assert "need a backend id" in err.getvalue()


def test_progress_draws_only_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    plain, tty = io.StringIO(), Tty()
    for stream in (plain, tty):
        progress = cli.Progress(stream)
        progress.update(models.Job(job_id="net_job_1", status="running", backend="ibm_brisbane"))
        progress.done()
    assert plain.getvalue() == ""
    assert "net_job_1 running on ibm_brisbane" in tty.getvalue() and tty.getvalue().endswith("\r\x1b[2K")
