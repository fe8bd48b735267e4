"""tools/invoke.py as callers meet it: Ctrl-C while following a run stops the waiting, not the
run, and says how to wait again or cancel; HOLD= reaches a start as hold_minutes; a followed run
prints each attempt. Run by make test."""

import io
import json
import sys
import unittest
from contextlib import redirect_stderr, redirect_stdout
from unittest import mock

from local import invoke

RUN_ID = "test-ci-1-20261202t150000-ab12"


class FollowingARun(unittest.TestCase):
    def test_ctrl_c_stops_waiting_and_names_the_resume_and_cancel_commands(self):
        answers = iter([(True, {"status": "running", "run_id": RUN_ID})])

        def call(function, payload):
            answer = next(answers, None)
            if answer is None:
                raise KeyboardInterrupt
            return answer

        stderr, stdout = io.StringIO(), io.StringIO()
        argv = ["invoke.py", "test", "--local", "--follow", "--cluster", "ci-1", "--version", "main"]
        with mock.patch.object(invoke, "invoke_local", call), mock.patch.object(sys, "argv", argv):
            with redirect_stderr(stderr), redirect_stdout(stdout):
                code = invoke.main()
        self.assertEqual(code, 130)
        self.assertIn(f"run {RUN_ID} goes on", stderr.getvalue())
        self.assertIn(f"make cluster-cancel LOCAL=1 RUN_ID={RUN_ID}", stderr.getvalue())
        self.assertIn(f"FUNCTION=test PAYLOAD='{json.dumps({'run_id': RUN_ID})}'", stderr.getvalue())

    def test_cancel_sends_the_run_id_and_who_asks(self):
        args = mock.Mock(payload=None, function="cancel", run_id=RUN_ID)
        with mock.patch.object(invoke, "requested_by", return_value="dev@example.org"):
            event = json.loads(invoke.build_payload(args))
        self.assertEqual(event, {"run_id": RUN_ID, "requested_by": "dev@example.org"})
        with self.assertRaises(invoke.InvocationFailed):
            invoke.build_payload(mock.Mock(payload=None, function="cancel", run_id=None))

    def test_every_cluster_and_run_goal_says_who_asks_and_a_resume_does_not(self):
        def goal(function, **extra):
            fields = dict(
                payload=None,
                function=function,
                run_id=None,
                cluster="ci-1",
                version="main",
                hold=None,
                wait_seconds=None,
                follow=False,
                at="2030-01-01T00:00:00Z",
                ttl=None,
            )
            fields.update(extra)
            return mock.Mock(**fields)

        with mock.patch.dict("os.environ", {"PROVISIONER_REQUESTED_BY": "octocat+run-42"}):
            for function in ("deploy", "schedule_destroy", "destroy", "test", "build"):
                self.assertEqual(json.loads(invoke.build_payload(goal(function)))["requested_by"], "octocat+run-42")
            self.assertNotIn("requested_by", json.loads(invoke.build_payload(goal("test", run_id=RUN_ID))))
            self.assertEqual(
                json.loads(invoke.build_payload(goal("deploy", payload='{"cluster": "x"}'))),
                {"cluster": "x"},
                "make invoke sends its PAYLOAD as given",
            )

    def test_dry_run_asks_for_the_plan(self):
        args = mock.Mock(
            payload=None, function="destroy", run_id=None, cluster="ci-1", dry_run=True, wait_seconds=None, follow=False
        )
        self.assertTrue(json.loads(invoke.build_payload(args))["dry_run"])
        args.dry_run = False
        self.assertNotIn("dry_run", json.loads(invoke.build_payload(args)))

    def test_hold_reaches_a_start_as_hold_minutes_within_its_bounds(self):
        def start(hold):
            return mock.Mock(
                payload=None,
                function="test",
                run_id=None,
                cluster="ci-1",
                version="main",
                hold=hold,
                wait_seconds=None,
                follow=False,
            )

        self.assertEqual(json.loads(invoke.build_payload(start("30")))["hold_minutes"], 30)
        self.assertNotIn("hold_minutes", json.loads(invoke.build_payload(start(None))))
        for bad in ("241", "-1", "ten"):
            with self.assertRaises(invoke.InvocationFailed, msg=bad):
                invoke.build_payload(start(bad))

    def test_a_followed_run_prints_each_attempt_and_a_hold(self):
        answer = {
            "attempts": [
                {"number": 1, "instance_id": "i-1", "market": "spot", "outcome": "interrupted", "step": "debug-build"},
                {"number": 2, "instance_id": "i-2", "market": "spot", "outcome": "running"},
            ],
            "held_until": "2026-12-02T18:00:00Z",
            "connect": "aws ssm start-session --target i-2",
        }
        stderr = io.StringIO()
        with redirect_stderr(stderr):
            invoke.report_progress(answer, set())
        self.assertIn("attempt 1 on i-1 (spot) ended: interrupted in step debug-build", stderr.getvalue())
        self.assertIn("attempt 2 runs on i-2 (spot)", stderr.getvalue())
        self.assertIn("held until 2026-12-02T18:00:00Z: aws ssm start-session --target i-2", stderr.getvalue())


if __name__ == "__main__":
    unittest.main()
