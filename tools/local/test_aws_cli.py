"""The served AWS CLI (local/aws_cli.py, aws-cli/aws) answers each call as the venv's CLI does:
the call's own environment, directory, standard input and configuration files, its output and
exit status; a call ends when its client is killed; without a server the client is the CLI
itself. Run by make test."""

import http.server
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(TOOLS)
CLIENT = os.path.join(TOOLS, "aws-cli", "aws")
CLI = os.path.join(ROOT, ".venv", "bin", "aws")
# A call that fails at once where it would reach the network.
UNREACHABLE = ["--endpoint-url", "http://127.0.0.1:9", "--cli-connect-timeout", "1", "--region", "us-east-1"]


class ServedCli(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        cls.socket = os.path.join(cls.dir.name, "aws-cli.sock")
        cls.server = subprocess.Popen(
            [sys.executable, "-m", "local.aws_cli", cls.socket],
            env={"PATH": os.environ["PATH"], "HOME": cls.dir.name, "PYTHONPATH": TOOLS},
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not os.path.exists(cls.socket):
            if time.monotonic() > deadline or cls.server.poll() is not None:
                raise RuntimeError("the AWS CLI server did not start")
            time.sleep(0.05)

    @classmethod
    def tearDownClass(cls):
        cls.server.terminate()
        cls.server.wait()
        cls.dir.cleanup()

    def setUp(self):
        self.home = tempfile.TemporaryDirectory()
        self.addCleanup(self.home.cleanup)

    def env(self, **extra):
        env = {"PATH": os.environ["PATH"], "HOME": self.home.name, "AWS_ACCESS_KEY_ID": "id-of-this-call"}
        env.update(AWS_SECRET_ACCESS_KEY="secret", AWS_MAX_ATTEMPTS="1", PROVISIONER_AWS_CLI_SOCKET=self.socket)
        env.update(extra)
        return env

    def both(self, args, stdin="", cwd=None, **env):
        """(served, direct): each a (status, stdout, stderr) of the same call."""
        answers = []
        for command in ([sys.executable, CLIENT], [CLI]):
            done = subprocess.run(
                [*command, *args], input=stdin, capture_output=True, text=True, env=self.env(**env), cwd=cwd, timeout=60
            )
            answers.append((done.returncode, done.stdout, done.stderr))
        return answers

    def test_each_call_has_its_own_environment(self):
        for region in ("eu-west-3", "ap-south-1"):
            served, direct = self.both(["configure", "list"], AWS_DEFAULT_REGION=region)
            self.assertEqual(served, direct)
            self.assertIn(region, served[1])
            self.assertIn("****************call", served[1])

    def test_a_config_file_in_the_calls_home_is_read(self):
        os.makedirs(os.path.join(self.home.name, ".aws"))
        with open(os.path.join(self.home.name, ".aws", "config"), "w") as config:
            config.write("[default]\nregion = sa-east-1\n")
        served, direct = self.both(["configure", "list"])
        self.assertEqual(served, direct)
        self.assertIn("sa-east-1", served[1])

    def test_usage_errors_keep_their_message_and_status(self):
        served, direct = self.both(["dynamodb", "no-such-operation"])
        self.assertEqual(served, direct)
        self.assertNotEqual(served[0], 0)

    def test_the_call_reads_files_from_its_own_directory(self):
        with tempfile.TemporaryDirectory() as work:
            with open(os.path.join(work, "input.json"), "w") as given:
                given.write("{not json")
            args = ["dynamodb", "list-tables", "--cli-input-json", "file://input.json", *UNREACHABLE]
            served, direct = self.both(args, cwd=work)
            self.assertEqual(served, direct)
            self.assertIn("Invalid JSON", served[2])

    def test_standard_input_reaches_the_request(self):
        bodies = []

        class Bucket(http.server.BaseHTTPRequestHandler):
            def do_PUT(self):
                bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("ETag", '"0"')
                self.end_headers()

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Bucket)
        self.addCleanup(server.server_close)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.shutdown)
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        args = ["s3", "cp", "-", "s3://bucket/key", "--region", "us-east-1", "--endpoint-url", endpoint]
        served, direct = self.both(args, stdin="what the step logged\n")
        self.assertEqual(served, direct)
        self.assertEqual(served[0], 0)
        self.assertEqual(bodies, [b"what the step logged\n"] * 2)

    def test_a_killed_client_ends_its_call(self):
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)
        port = listener.getsockname()[1]
        args = ["dynamodb", "list-tables", "--region", "us-east-1", "--endpoint-url", f"http://127.0.0.1:{port}"]
        client = subprocess.Popen(
            [sys.executable, CLIENT, *args, "--cli-read-timeout", "300"],
            env=self.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        listener.settimeout(30)
        request, _ = listener.accept()
        self.addCleanup(request.close)
        client.send_signal(signal.SIGKILL)
        client.wait()
        request.settimeout(10)
        received = b""
        while chunk := request.recv(65536):
            received += chunk
        self.assertIn(b"DynamoDB_20120810.ListTables", received)

    def test_without_a_server_the_client_is_the_cli(self):
        env = self.env(AWS_DEFAULT_REGION="eu-north-1", PROVISIONER_AWS_CLI_SOCKET=os.path.join(self.home.name, "none"))
        done = subprocess.run([sys.executable, CLIENT, "configure", "list"], capture_output=True, text=True, env=env)
        direct = subprocess.run([CLI, "configure", "list"], capture_output=True, text=True, env=env)
        self.assertEqual((done.returncode, done.stdout, done.stderr), (direct.returncode, direct.stdout, direct.stderr))
        self.assertIn("eu-north-1", done.stdout)


if __name__ == "__main__":
    unittest.main()
