"""boto3 clients for the tests.

Why: tests must use the real AWS SDK with its default behaviour (retries,
checksums, signing), but must not pick up the credentials, region or
profile of whoever runs them.  Everything that matters is passed explicitly.
"""

from __future__ import annotations

from typing import Any

DEFAULT_REGION = "us-east-1"


def dynamodb_client(endpoint_url: str, access_key: str, secret_key: str,
                    region: str = DEFAULT_REGION, **config_kwargs: Any):
    """A boto3 DynamoDB client pointed at ``endpoint_url``.

    ``config_kwargs`` go to ``botocore.config.Config`` (e.g.
    ``retries={"max_attempts": 1, "mode": "standard"}``,
    ``connect_timeout=2``); with none given the SDK defaults apply.
    """
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(aws_access_key_id=access_key,
                                    aws_secret_access_key=secret_key,
                                    region_name=region)
    config = Config(**config_kwargs) if config_kwargs else None
    return session.client("dynamodb", endpoint_url=endpoint_url, config=config)


def sign_for_host(client, host: str):
    """Makes every request of the boto3 ``client`` carry ``Host: host``,
    signed as such, while it still connects to its ``endpoint_url``: how a
    test names a virtual host on a loopback listener (only loopback
    addresses are used, so the name resolves nowhere). Returns the client."""
    def set_host(request, **_):
        request.headers["Host"] = host
    client.meta.events.register("before-sign.dynamodb", set_host)
    return client
