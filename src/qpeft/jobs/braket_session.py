"""Connecting to Amazon Braket, for :mod:`qpeft.jobs.braket`: the device names, the AWS session and
device (each failure a ValueError saying what to fix), the results folder, which of the SDK's
errors are transient, and what of the session is secret (the secret key, the session token) or
names the account (its AWS account number, as a digest).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

from qpeft.backends.base import require
from qpeft.jobs.base import account_digest

logger = logging.getLogger(__name__)

#: short device names -> ARN (the SDK's ``braket.devices.Devices``, amazon-braket-sdk 1.127)
DEVICES = {
    "sv1": "arn:aws:braket:::device/quantum-simulator/amazon/sv1",
    "dm1": "arn:aws:braket:::device/quantum-simulator/amazon/dm1",
    "ionq_forte": "arn:aws:braket:us-east-1::device/qpu/ionq/Forte-1",
    "ionq_forte_enterprise": "arn:aws:braket:us-east-1::device/qpu/ionq/Forte-Enterprise-1",
    "iqm_garnet": "arn:aws:braket:eu-north-1::device/qpu/iqm/Garnet",
    "iqm_emerald": "arn:aws:braket:eu-north-1::device/qpu/iqm/Emerald",
    "rigetti_ankaa": "arn:aws:braket:us-west-1::device/qpu/rigetti/Ankaa-3",
    "rigetti_cepheus": "arn:aws:braket:us-west-1::device/qpu/rigetti/Cepheus-1-108Q",
}
# error codes that say the service created nothing and the request may succeed later
TRANSIENT_CODES = ("ThrottlingException", "ServiceQuotaExceededException", "InternalServiceException")
# botocore exceptions: no connection was made (safe) / the request may have reached the service
NOT_SENT = ("EndpointConnectionError", "ConnectTimeoutError", "ProxyConnectionError")
MAYBE_SENT = ("ReadTimeoutError", "ConnectionClosedError", "ResponseStreamingError")


def error_code(error: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(error, "response", None)
    return (response or {}).get("Error", {}).get("Code", "") if isinstance(response, dict) else ""


def connect(backend: str, aws_session, region: str | None, keep: Callable, redact: Callable[[str], str]):
    """(AwsSession, AwsDevice) of ``backend`` (a short name or an ARN); ``keep`` is given the
    session as soon as it is made (so that ``redact`` knows its secrets). A missing credential,
    an unknown device, a device that is not ONLINE or a refused request is a ValueError saying
    what to fix (transient errors are raised as they are, for
    :func:`qpeft.jobs.providers.connect` to retry)."""
    aws = require("braket.aws", "braket")
    exceptions = require("botocore.exceptions", "braket")
    arn = DEVICES.get(backend, backend)
    if not arn.startswith("arn:aws:braket:"):
        raise ValueError(
            f"unknown Braket device {backend!r}: use local, local_dm, one of {', '.join(DEVICES)}, or a "
            "device ARN (arn:aws:braket:REGION::device/...; `aws braket search-devices` lists them)"
        )
    try:
        if aws_session is None:
            boto3 = require("boto3", "braket")
            aws_session = aws.AwsSession(boto3.Session(region_name=arn.split(":")[3] or region))
        keep(aws_session)
        device = aws.AwsDevice(arn, aws_session)
    except ValueError as err:  # (the SDK's answer to a device its region does not list)
        raise ValueError(
            f"Amazon Braket has no device {arn} ({err}; retired or misspelled?); short names: {', '.join(DEVICES)}"
        ) from None
    except exceptions.NoCredentialsError:
        raise ValueError(
            "no AWS credentials for Amazon Braket: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
            "AWS_PROFILE), or run `aws configure` / `aws sso login`"
        ) from None
    except exceptions.NoRegionError:
        raise ValueError(
            f"{backend} is not tied to a region: set AWS_REGION (or pass quantum option `region`)"
        ) from None
    except exceptions.ClientError as err:
        if error_code(err) in TRANSIENT_CODES:
            raise
        if error_code(err) == "ResourceNotFoundException":
            raise ValueError(
                f"Amazon Braket has no device {arn} (retired or misspelled?); short names: {', '.join(DEVICES)}"
            ) from None
        raise ValueError(
            f"Amazon Braket refused the request ({redact(str(err))}): check the AWS credentials and their "
            "braket:* permissions"
        ) from None
    if device.status != "ONLINE":
        raise ValueError(
            f"Braket device {backend} is {device.status}, not ONLINE: no task can be created on it now; "
            "rerun when it is back (the Braket console shows its availability)"
        )
    # (the device's own session: a regional device makes one of its region where the given one is of
    # another, and its tasks are created, searched for and followed there)
    return device.aws_session, device


def results_folder(s3_folder: str | None) -> tuple[str, str] | None:
    """(bucket, prefix) of ``s3://BUCKET/PREFIX``; None: the SDK's default bucket, made on the
    first submission."""
    if s3_folder is None:
        return None
    if not s3_folder.startswith("s3://") or "/" not in s3_folder[5:]:
        raise ValueError(f"`s3_folder` must read s3://BUCKET/PREFIX, got {s3_folder!r}")
    bucket, _, prefix = s3_folder[5:].partition("/")
    return (bucket, prefix.rstrip("/"))


def session_secrets(session) -> list[str]:
    """The session's secret access key and session token (none without a session)."""
    credentials = session.boto_session.get_credentials() if session is not None else None
    if credentials is None:
        return []
    frozen = credentials.get_frozen_credentials()
    return [s for s in (frozen.secret_key, frozen.token) if s]


def session_account(session, redact: Callable[[str], str]) -> str | None:
    """The digest of the session's AWS account number (STS GetCallerIdentity: the same for every
    key and role session of the account, which owns its quantum tasks); None without a session or
    where STS does not answer within a few seconds (then nothing is checked, with a warning)."""
    if session is None:
        return None
    try:
        config = require("botocore.config", "braket").Config(
            connect_timeout=5, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"}
        )
        sts = session.boto_session.client("sts", region_name=session.region, config=config)
        return account_digest(sts.get_caller_identity()["Account"])
    except Exception as err:  # noqa: BLE001 (the check is a safeguard: without it the run goes on unchecked)
        logger.warning(
            "Amazon Braket: the AWS account could not be read from STS (%s): this run's jobs are recorded without "
            "it, and a rerun as another AWS account will not be stopped before it takes them as lost",
            redact(str(err)),
        )
        return None


def client_token(nonce: str, tag: str) -> str:
    """The ``clientToken`` of every create call of the submission ``tag`` by the provider whose own
    random part is ``nonce``: 64 hex digits (the API's most), the same for the same two."""
    return hashlib.sha256(f"{nonce}|{tag}".encode()).hexdigest()
