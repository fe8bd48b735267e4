"""The nightly's job summary: a TEST run's changes as a table, new failures first."""

import unittest

from local.run_summary import summary

RUN = {
    "run_id": "test-ci-nightly-20261206t020000-ab12",
    "kind": "test",
    "cluster": "ci-nightly",
    "state": "failed",
    "log_location": "s3://logs/runs/AROA:i-1/",
    "steps": [{"name": "python-client-pytests", "status": "failed", "duration_seconds": 125}],
    "tests": {
        "counts": {"passed": 310, "failed": 2, "skipped": 4},
        "compared_with": "test-ci-nightly-20261205t020000-cd34",
        "failed": [
            {
                "id": "tests/test_b.py::test_two",
                "step": "python-client-pytests",
                "status": "still_failing",
                "since": "test-ci-nightly-20261201t020000-ef56",
            },
            {
                "id": "tests/test_a.py::test_one",
                "step": "python-client-pytests",
                "status": "new",
                "since": "test-ci-nightly-20261206t020000-ab12",
            },
        ],
        "new": ["tests/test_a.py::test_one"],
        "still_failing": [
            {
                "id": "tests/test_b.py::test_two",
                "step": "python-client-pytests",
                "since": "test-ci-nightly-20261201t020000-ef56",
            }
        ],
        "fixed": ["tests/test_c.py::test_three"],
        "flaky": ["tests/test_d.py::test_four"],
    },
}


class ChangesTable(unittest.TestCase):
    def test_new_failures_come_first_then_still_failing_fixed_and_flaky(self):
        text = summary({"recent_runs": [RUN]}, "ci-nightly", ["test"])
        rows = [line for line in text.splitlines() if line.startswith("| ") and "test_" in line]
        self.assertEqual(
            [row.split(" | ")[0] for row in rows], ["| new failure", "| still failing", "| fixed", "| flaky"]
        )
        self.assertIn("since `test-ci-nightly-20261201t020000-ef56`", rows[1])
        self.assertIn("310 passed, 2 failed, 4 skipped; compared with `test-ci-nightly-20261205t020000-cd34`", text)

    def test_a_run_without_results_has_no_table(self):
        run = {key: value for key, value in RUN.items() if key != "tests"}
        self.assertNotIn("| change |", summary({"recent_runs": [run]}, "ci-nightly", ["test"]))


if __name__ == "__main__":
    unittest.main()
