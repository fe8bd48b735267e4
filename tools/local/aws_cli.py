"""The AWS CLI of the venv, loaded once for the local stack: `tools/aws-cli/aws` hands each call
(its arguments, environment, directory and standard streams) to this server, which runs it with
the real CLI's own driver in a child forked from a process that has already imported it. The
requests are the CLI's own; only its start, about 0.3 s of a second's call on this kind of
machine, is paid once. The sandboxed instance scripts call the CLI for every report and upload.

A call whose configuration could differ from the server's (a config or credentials file, a
profile, a data path) gets a driver of its own, made in its child, as the CLI would make it.
A call ends when its client goes: the child is killed, as a signal to the CLI would end it.

    python -m local.aws_cli SOCKET
"""

import json
import os
import signal
import socket
import struct
import sys
import threading

# What a client sends first: the length of the JSON request that follows, with its three
# standard streams attached (SCM_RIGHTS).
HEADER = struct.Struct("!I")
STREAMS = 3
# What the server answers: the call's exit status.
STATUS = struct.Struct("!i")
# The CLI's own exit status for a call it could not run (its usage errors use 252).
FAILED = 255

# What makes the CLI's configuration differ from the server's (started with none of them).
CONFIG_VARIABLES = (
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_DATA_PATH",
)


def configured(env):
    """Whether a call with this environment reads configuration the server's driver did not."""
    if any(env.get(name) for name in CONFIG_VARIABLES):
        return True
    home = env.get("HOME")
    return bool(home) and any(os.path.exists(os.path.join(home, ".aws", name)) for name in ("config", "credentials"))


def data_path(given):
    """AWS_DATA_PATH as the CLI sets it for itself when imported: the caller's, then its own."""
    import awscli

    paths = [os.path.expanduser(os.path.expandvars(path)) for path in given.split(os.pathsep)] if given else []
    return os.pathsep.join([*paths, os.path.join(os.path.dirname(os.path.abspath(awscli.__file__)), "data")])


def warmed_driver():
    """The CLI's driver with its command table and the models of the services the instance
    scripts and tests call, loaded. Nothing here reads credentials, a region or an endpoint: those
    are read from each call's environment when it runs."""
    from awscli.clidriver import create_clidriver

    driver = create_clidriver()
    driver._get_command_table()
    for service in ("dynamodb", "s3", "sts", "secretsmanager", "ec2", "iam", "ecr"):
        # A client made with stated values loads the models, endpoint rules and partitions.
        driver.session.create_client(
            service, region_name="us-east-1", aws_access_key_id="warm", aws_secret_access_key="warm"
        )
    return driver


def receive(conn):
    """The request and the client's standard streams."""
    fds = []
    message, ancillary, _, _ = conn.recvmsg(HEADER.size, socket.CMSG_SPACE(STREAMS * 4))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(struct.unpack(f"{len(data) // 4}i", data[: len(data) - len(data) % 4]))
    if len(message) != HEADER.size or len(fds) != STREAMS:
        raise ValueError("a request is its length and three streams")
    (length,) = HEADER.unpack(message)
    payload = b""
    while len(payload) < length:
        chunk = conn.recv(length - len(payload))
        if not chunk:
            raise ValueError("the request ended early")
        payload += chunk
    return json.loads(payload), fds


def end_with_client(conn):
    """Kills this call when its client goes (it sends nothing after its request)."""

    def watch():
        try:
            conn.recv(1)
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


def run(conn, driver):
    """One call, in its own child. Returns its exit status."""
    request, fds = receive(conn)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ["AWS_DATA_PATH"] = data_path(request["env"].get("AWS_DATA_PATH"))
    os.chdir(request["cwd"])
    sys.argv = ["aws", *request["argv"]]
    end_with_client(conn)
    if configured(request["env"]):
        from awscli.clidriver import create_clidriver

        driver = create_clidriver()
    try:
        status = driver.main(request["argv"])
    except SystemExit as exit:
        status = exit.code if isinstance(exit.code, int) else FAILED
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:
            pass
    return status or 0


def serve(path):
    driver = warmed_driver()
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Only its owner may connect: a call runs as the server's user.
    umask = os.umask(0o077)
    try:
        listener.bind(path)
    finally:
        os.umask(umask)
    listener.listen(64)
    # Children are reaped as they end; each child sets it back, as the CLI may wait for its own.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    print(f"aws-cli: serving the AWS CLI on {path}", flush=True)
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            status = FAILED
            try:
                status = run(conn, driver)
            except Exception as error:  # a broken request: the client says so
                print(f"aws-cli: {error}", file=sys.stderr, flush=True)
            try:
                conn.sendall(STATUS.pack(status))
            finally:
                os._exit(status & 0xFF)
        conn.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m local.aws_cli SOCKET")
    serve(sys.argv[1])
