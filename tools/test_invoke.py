"""tools/invoke.py as callers meet it: Ctrl-C while following a run stops the waiting, not the
run, and says how to wait again or cancel. Run by make test."""

import io
import json
import sys
import unittest
from contextlib import redirect_stderr, redirect_stdout
from unittest import mock

import invoke

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


if __name__ == "__main__":
    unittest.main()
