"""A stand-in for Amazon Braket's service, which tests cannot reach.

It replaces the service and only the service: the provider and the SDK run for real on a real
boto3 session (``StandInBraketService.session()``), whose clients validate every request against
botocore's Braket and S3 models as they would before sending it; at the point where botocore would
send the request over the network (its ``before-call`` event), the stand-in answers instead:
``GetDevice``, ``CreateQuantumTask``, ``GetQuantumTask``, ``CancelQuantumTask``,
``SearchQuantumTasks`` (paged, filtered by device and creation time, as the API is) and the S3
``GetObject`` the SDK reads a task's results with. Errors come back as the service's error codes
(``ResourceNotFoundException``, ``ThrottlingException``, ...), raised by botocore as ClientError.
``CreateQuantumTask``'s ``clientToken`` is an idempotency token (botocore's Braket model lists it
among the operation's idempotent members): a create with a token the service has seen answers
the task that token made, and creates nothing. The search index may lag (``index_lag_s``): a new
task is listed by ``SearchQuantumTasks`` only that many seconds after it was made.

Tasks run on the SDK's own local simulators (``braket_sv``; ``braket_dm`` for DM1) when they
leave the queue; the devices advertise those simulators' capabilities (with program sets, or
without them). ``bill`` lists every task created, those the service has since forgotten included.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import itertools
import json
import re
import threading

IQM_GARNET = "arn:aws:braket:eu-north-1::device/qpu/iqm/Garnet"
SV1 = "arn:aws:braket:::device/quantum-simulator/amazon/sv1"
DM1 = "arn:aws:braket:::device/quantum-simulator/amazon/dm1"
#: fake credentials: a stand-in service needs some; the secret must never reach a ledger or message
SECRET = "standin/SECRET/key"


@functools.cache
def _capabilities(backend: str, program_sets: bool) -> str:
    from braket.devices import LocalSimulator

    capabilities = json.loads(LocalSimulator(backend).properties.json())
    if not program_sets:
        capabilities["action"].pop("braket.ir.openqasm.program_set")
    return json.dumps(capabilities)


class StandInBraketService:
    """Amazon Braket's API and its results bucket (see module docstring).

    devices: ARN -> (the local simulator its tasks run on, whether it takes program sets).
    polls: GetQuantumTask calls a new task reads QUEUED (then RUNNING once, then it runs).
    page_size: tasks per SearchQuantumTasks page (small, so lookups page through results).
    """

    def __init__(self, devices=None, polls=1, page_size=2, status="ONLINE"):
        self.devices = devices or {IQM_GARNET: ("braket_sv", True), SV1: ("braket_sv", False), DM1: ("braket_dm", True)}
        self.status = status
        self.polls, self.page_size = polls, page_size
        self.tasks: dict[str, dict] = {}  # ARN -> the task as the service holds it
        self.bill: list[str] = []  # the ARN of every task created
        self.objects: dict[tuple[str, str], bytes] = {}  # (bucket, key) -> S3 object
        self.faults: dict[str, list[str]] = {}  # operation -> error codes its next calls answer with
        self.fault_message = "stand-in fault"  # (what those errors say)
        self.created_but_lost = 0  # CreateQuantumTask calls whose answer is lost after the task was made (or found)
        self.fail_next = ""  # the next task created ends FAILED with this reason
        self.account = "111122223333"  # the AWS account STS names for the session's credentials
        self.hold_next = 0  # the next tasks created stay RUNNING until they are cancelled
        self.cancel_polls = 2  # GetQuantumTask calls a cancelled task reads CANCELLING first
        self.seen_at_create: list[dict[str, str]] = []  # per create: the status of every task then
        self.tokens: dict[str, str] = {}  # clientToken -> the ARN of the task it made
        self.create_tokens: list[str] = []  # the clientToken of every create call, in order
        self.index_lag_s = 0.0  # seconds before SearchQuantumTasks lists a new task
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # ---- wiring ---------------------------------------------------------------------------

    def session(self, region: str = "eu-north-1", factory=None):
        """A boto3 session whose Braket and S3 clients reach this stand-in (``factory``: the
        boto3.Session class to build it with)."""
        import boto3

        factory = factory or boto3.Session
        session = factory(aws_access_key_id="AKIASTANDIN", aws_secret_access_key=SECRET, region_name=region)
        for service in ("braket", "s3", "sts"):
            session.events.register(f"before-parameter-build.{service}", self._keep_params)
            session.events.register(f"before-call.{service}", self._answer)
        return session

    def aws_session(self, region: str = "eu-north-1"):
        """A ``braket.aws.AwsSession`` on :meth:`session` (what the provider takes)."""
        from braket.aws import AwsSession

        return AwsSession(boto_session=self.session(region))

    def install(self, monkeypatch) -> None:
        """Every boto3 session made from now on (the provider's own, made from a spec on the
        command line) reaches this stand-in."""
        import boto3

        real = boto3.Session
        monkeypatch.setattr(boto3, "Session", lambda *a, region_name=None, **k: self.session(region_name, real))

    @staticmethod
    def _keep_params(params, context, **_):
        context["stand_in_params"] = dict(params)

    def _answer(self, model, context, params, **_):
        request, params = params, context["stand_in_params"]
        if model.name == "CreateQuantumTask":  # (the token as sent: botocore fills one in after the params are kept)
            params["clientToken"] = json.loads(request["body"])["clientToken"]
        region = re.match(r"https://braket\.([a-z0-9-]+)\.amazonaws\.com", request["url"])
        params["_region"] = region and region.group(1)  # (a Braket endpoint lists its own region's tasks)
        name = model.name
        with self._lock:
            codes = self.faults.get(name) or []
            if codes:
                return self._error(codes.pop(0), self.fault_message)
            try:
                return getattr(self, f"_{name}")(params)
            except KeyError as err:
                return self._error("ResourceNotFoundException", f"{err.args[0]} not found")

    @staticmethod
    def _ok(body: dict):
        from botocore.awsrequest import AWSResponse

        return AWSResponse("https://stand-in", 200, {}, None), {"ResponseMetadata": {"HTTPStatusCode": 200}, **body}

    @staticmethod
    def _error(code: str, message: str):
        from botocore.awsrequest import AWSResponse

        status = {"ThrottlingException": 429, "ResourceNotFoundException": 404, "ConflictException": 409}.get(code, 500)
        return AWSResponse("https://stand-in", status, {}, None), {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }

    # ---- the API --------------------------------------------------------------------------

    def _GetCallerIdentity(self, params):
        return self._ok({"Account": self.account, "Arn": f"arn:aws:iam::{self.account}:user/standin", "UserId": "AIDA"})

    def _GetDevice(self, params):
        arn = params["deviceArn"]
        backend, program_sets = self.devices[arn]
        return self._ok(
            {
                "deviceArn": arn,
                "deviceName": arn.rsplit("/", 1)[-1],
                "providerName": "stand-in",
                "deviceType": "QPU" if "/qpu/" in arn else "SIMULATOR",
                "deviceStatus": self.status,
                "deviceCapabilities": _capabilities(backend, program_sets),
            }
        )

    def _CreateQuantumTask(self, params):
        from braket.ir.openqasm import Program, ProgramSet

        if params["deviceArn"] not in self.devices:
            return self._error("ValidationException", f"no device {params['deviceArn']}")
        token = params["clientToken"]  # (botocore fills one in where the caller gives none)
        if not 1 <= len(token) <= 64:
            return self._error("ValidationException", "clientToken: length 1 to 64")
        self.create_tokens.append(token)
        if token in self.tokens:  # the create made again: its task, nothing new
            return self._created(self.tokens[token])
        self.seen_at_create.append({arn: t["status"] for arn, t in self.tasks.items()})
        action = json.loads(params["action"])
        kind = ProgramSet if action["braketSchemaHeader"]["name"] == "braket.ir.openqasm.program_set" else Program
        program = kind.parse_obj(action)
        limits = json.loads(_capabilities(*self.devices[params["deviceArn"]]))["action"]
        if kind is ProgramSet and "braket.ir.openqasm.program_set" not in limits:
            return self._error("ValidationException", "this device does not run program sets")
        if kind is ProgramSet:  # the service validates a program set against the device's limits
            executables = sum(max(1, len(next(iter((p.inputs or {}).values()), [0]))) for p in program.programs)
            allowed = limits["braket.ir.openqasm.program_set"]
            if executables > allowed["maximumExecutables"] or params["shots"] > allowed["maximumTotalShots"]:
                return self._error("ValidationException", f"{executables} executables, {params['shots']} shots")
            if params["shots"] % executables:
                return self._error("ValidationException", "shots must divide among the executables")
        number = next(self._ids)
        arn = f"arn:aws:braket:eu-north-1:123456789012:quantum-task/standin-{number}"
        prefix = f"{params['outputS3KeyPrefix']}/standin-{number}"
        self.tasks[arn] = {
            "quantumTaskArn": arn,
            "status": "QUEUED",
            "deviceArn": params["deviceArn"],
            "deviceParameters": "{}",
            "shots": params["shots"],
            "outputS3Bucket": params["outputS3Bucket"],
            "outputS3Directory": prefix,
            "createdAt": dt.datetime.now(dt.timezone.utc),
            "_region": params["_region"],  # (a region's endpoint lists its own tasks only)
            "tags": dict(params.get("tags") or {}),
            "actionMetadata": {"actionType": action["braketSchemaHeader"]["name"]},
            "_program": program,
            "_polls": self.polls,
            "_fail": self.fail_next,
            "_hold": self.hold_next > 0,
        }
        self.fail_next = ""
        self.hold_next = max(self.hold_next - 1, 0)
        self.bill.append(arn)
        self.tokens[token] = arn
        return self._created(arn)

    def _created(self, arn: str):
        if self.created_but_lost:  # (the answer to a create made again can be lost too)
            self.created_but_lost -= 1
            return self._error("InternalServiceException", "the connection dropped after the task was created")
        return self._ok({"quantumTaskArn": arn})

    def _GetQuantumTask(self, params):
        task = self.tasks[params["quantumTaskArn"]]
        if task["status"] in ("QUEUED", "RUNNING"):
            if task["_polls"] > 0:
                task["_polls"] -= 1
            elif task["status"] == "QUEUED":
                task["status"] = "RUNNING"
            elif not task["_hold"]:
                self._run(task)
        elif task["status"] == "CANCELLING":
            task["_cancel_polls"] -= 1
            if task["_cancel_polls"] < 0:
                task["status"] = "CANCELLED"
        return self._ok(
            {
                **{k: v for k, v in task.items() if not k.startswith("_")},
                "queueInfo": {"queue": "QUANTUM_TASKS_QUEUE", "position": "1", "queuePriority": "Normal"},
            }
        )

    def _run(self, task):
        from braket.default_simulator import DensityMatrixSimulator, StateVectorSimulator

        if task["_fail"]:
            task.update(status="FAILED", failureReason=task["_fail"], endedAt=dt.datetime.now(dt.timezone.utc))
            return
        backend, _ = self.devices[task["deviceArn"]]
        simulator = StateVectorSimulator() if backend == "braket_sv" else DensityMatrixSimulator()
        result = simulator.run(task["_program"], shots=task["shots"])
        key = (task["outputS3Bucket"], f"{task['outputS3Directory']}/results.json")
        self.objects[key] = result.json().encode()
        task.update(status="COMPLETED", endedAt=dt.datetime.now(dt.timezone.utc))

    def _CancelQuantumTask(self, params):
        task = self.tasks[params["quantumTaskArn"]]
        if task["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
            return self._error("ConflictException", f"quantum task is {task['status']}: it cannot be cancelled")
        task["status"], task["_cancel_polls"] = "CANCELLING", self.cancel_polls
        return self._ok({"quantumTaskArn": task["quantumTaskArn"], "cancellationStatus": "CANCELLING"})

    def _SearchQuantumTasks(self, params):
        tasks = [t for t in self.tasks.values() if t["_region"] == params["_region"]]
        for f in params["filters"]:
            assert f["name"] in ("quantumTaskArn", "deviceArn", "jobArn", "status", "createdAt"), f  # (the API's)
            if f["name"] == "deviceArn":
                tasks = [t for t in tasks if t["deviceArn"] in f["values"]]
            elif f["name"] == "createdAt":
                assert f["operator"] == "GTE"
                since = dt.datetime.strptime(f["values"][0], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
                tasks = [t for t in tasks if t["createdAt"] >= since]
        listed = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=self.index_lag_s)
        tasks = [t for t in tasks if t["createdAt"] <= listed]
        start = int(params.get("nextToken") or 0)
        page = tasks[start : start + self.page_size]
        summaries = [
            {k: t[k] for k in ("quantumTaskArn", "status", "deviceArn", "shots", "createdAt", "tags")}
            | {"outputS3Bucket": t["outputS3Bucket"], "outputS3Directory": t["outputS3Directory"]}
            for t in page
        ]
        more = start + self.page_size < len(tasks)
        return self._ok({"quantumTasks": summaries, **({"nextToken": str(start + self.page_size)} if more else {})})

    def _GetObject(self, params):
        from botocore.response import StreamingBody

        data = self.objects[(params["Bucket"], params["Key"])]
        return self._ok({"Body": StreamingBody(io.BytesIO(data), len(data)), "ContentLength": len(data)})

    # ---- what tests do to the service --------------------------------------------------------

    def forget(self, arn: str) -> None:
        """The service no longer knows the task (its record expired)."""
        with self._lock:
            del self.tasks[arn]

    def created(self, tag: str) -> list[str]:
        """The ARNs of the tasks created with ``tag`` (what was paid for it)."""
        return [arn for arn, t in self.tasks.items() if t["tags"].get("qpeft-tag") == tag]
